//! A model's task state (its observer, and its driver when the task is the only one) and its
//! global-stage state (the driver fed the tasks' observations as partials).

use std::sync::Arc;

use super::driver::Driver;
use super::{ModelKind, Observation, Observer};
use crate::analytics::{
    AnalyticCapture, AnalyticPlan, Emit, GlobalAnalytic, KindPlan, Merge, TaskAnalytic,
};
use crate::event::Event;
use crate::partials::Partial;
use crate::restore::RestoreError;
use crate::window::codec::{DecodeError, Reader, Writer};
use crate::window::{Refused, WindowStats};

/// Kind byte of a model's state in task snapshots.
const MODEL: u8 = 7;

/// A model kind as the analytics seam sees it.
#[derive(Debug)]
pub struct ModelKindPlan {
    /// The manifest's name of the kind.
    pub name: &'static str,
    /// The kind.
    pub kind: Arc<dyn ModelKind>,
}

impl KindPlan for ModelKindPlan {
    fn kind(&self) -> &'static str {
        self.name
    }

    fn task_state(&self, _analytic: &AnalyticPlan, partials: bool) -> Box<dyn TaskAnalytic> {
        let lateness = self.kind.model().lateness;
        Box::new(ModelTask {
            observer: self.kind.observer(),
            driver: (!partials).then(|| Driver::new(self.kind.learner(), lateness)),
            lateness,
            buf: Vec::new(),
        })
    }

    fn global_state(&self, _analytic: &AnalyticPlan) -> Box<dyn GlobalAnalytic> {
        Box::new(ModelMerge {
            driver: Driver::new(self.kind.learner(), self.kind.model().lateness),
        })
    }

    fn always_global(&self) -> bool {
        true
    }
}

/// A model's state in one task.
#[derive(Debug)]
pub struct ModelTask {
    observer: Box<dyn Observer>,
    driver: Option<Driver>,
    lateness: i64,
    buf: Vec<Observation>,
}

impl TaskAnalytic for ModelTask {
    fn add(
        &mut self,
        user: &str,
        input: usize,
        event: &Event<'_>,
        wm: i64,
        _out: &mut Emit<'_>,
    ) -> bool {
        if event.time.saturating_add(self.lateness) < wm {
            return false;
        }
        self.observer.add(user, input, event);
        true
    }

    fn advance(&mut self, wm: i64, out: &mut Emit<'_>) {
        self.observer
            .due(wm.saturating_sub(self.lateness), &mut self.buf);
        for o in self.buf.drain(..) {
            match &mut self.driver {
                Some(d) => {
                    d.observe(o);
                }
                None => {
                    let mut block = Vec::with_capacity(1 + o.payload.len());
                    block.push(o.tag);
                    block.extend_from_slice(&o.payload);
                    out.partial(&o.user, o.time, o.epoch, 0, &block);
                }
            }
        }
        if let Some(d) = &mut self.driver {
            d.advance(wm, out);
        }
    }

    fn capture(&self) -> Box<dyn AnalyticCapture> {
        let mut w = Writer::default();
        w.u8(MODEL);
        self.observer.write(&mut w);
        match &self.driver {
            Some(d) => {
                w.u8(1);
                d.write(&mut w);
            }
            None => w.u8(0),
        }
        Box::new(crate::analytics::Encoded(w.finish()))
    }

    fn restore(&mut self, r: &mut Reader<'_>) -> Result<(), Refused> {
        if r.u8()? != MODEL {
            return Err(Refused::Kind);
        }
        self.observer.read(r)?;
        match (r.u8()?, &mut self.driver) {
            (1, Some(d)) => d.read(r)?,
            (0, None) => {}
            _ => return Err(Refused::Kind),
        }
        Ok(())
    }

    fn model_gauges(&self) -> Vec<(String, f64)> {
        self.driver.as_ref().map(Driver::gauges).unwrap_or_default()
    }

    fn stats(&self) -> WindowStats {
        let o = self.observer.stats();
        let d = self.driver.as_ref().map(Driver::stats).unwrap_or_default();
        WindowStats {
            keys: o.keys,
            windows: o.windows + d.windows,
            bytes: o.bytes + d.bytes,
        }
    }
}

/// A model's state in the global stage.
#[derive(Debug)]
pub struct ModelMerge {
    driver: Driver,
}

impl ModelMerge {
    fn take(&mut self, p: &Partial<'_>) -> Result<Merge, DecodeError> {
        let (&tag, payload) = p
            .block
            .split_first()
            .ok_or(DecodeError("an empty observation"))?;
        Ok(self.driver.observe(Observation {
            epoch: p.end,
            user: p.key.into(),
            time: p.start,
            tag,
            payload: payload.to_vec(),
        }))
    }
}

impl GlobalAnalytic for ModelMerge {
    fn partial(&mut self, p: &Partial<'_>, _wm: i64, _out: &mut Emit<'_>) -> Merge {
        self.take(p).unwrap_or(Merge::Malformed)
    }

    fn advance(&mut self, _old: i64, wm: i64, out: &mut Emit<'_>) {
        self.driver.advance(wm, out);
    }

    fn write(&self, w: &mut Writer) {
        self.driver.write(w);
    }

    fn read(&mut self, r: &mut Reader<'_>) -> Result<(), RestoreError> {
        Ok(self.driver.read(r)?)
    }

    fn stats(&self) -> WindowStats {
        self.driver.stats()
    }

    fn model_gauges(&self) -> Vec<(String, f64)> {
        self.driver.gauges()
    }
}
