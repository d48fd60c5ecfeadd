//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles.
//!
//! The algorithm is client-go's: the holder renews the Lease every retry period; a candidate
//! takes it over only when the record (holder, renew time) has not changed for a whole lease
//! duration *as measured by the candidate's own clock*, so clock skew between replicas does not
//! matter. Every write carries the `resourceVersion` it read, so two candidates cannot both win.
//! A holder that cannot renew within the renew deadline considers itself deposed and must stop
//! reconciling (the process exits; Kubernetes restarts it as a candidate). On shutdown the holder
//! releases the Lease so a standby takes over at once.
//!
//! Patience: the renew deadline is the lease duration less one retry period (12 s of the default
//! 15 s), counted from the *start* of the last successful renewal. A candidate's clock for the
//! same record starts only after that renewal was written, so the holder stops leading at least
//! one retry period before anyone may take over. An API server that is down (or stops
//! gracefully) for longer than the deadline still makes the holder step down and exit: a Lease
//! cannot prove leadership through a longer outage. Raise `--lease-duration-seconds` to ride out
//! longer outages, at the price of a slower takeover after a crash.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::call::{call, call_opt, CallError};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
}

impl LeaseConfig {
    /// Time between attempts to acquire or renew.
    pub fn retry_period(&self) -> Duration {
        self.lease_duration / 5
    }

    /// A holder that has not renewed for this long stops leading: one retry period before
    /// others may take over (one lease duration after its last renewal).
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration.saturating_sub(self.retry_period())
    }
}

/// Failed to read or write the Lease.
#[derive(Debug, thiserror::Error)]
#[error("failed to {0} Lease")]
pub struct LeaderError(&'static str, #[source] CallError);

/// What identifies one holding of the Lease: holder and renew time. When it stays the same for a
/// lease duration, the holder is gone.
type Record = (Option<String>, Option<MicroTime>);

/// One replica's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last record seen from another holder and when this replica first saw it.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observed: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Acquires or renews the Lease; `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = MicroTime(Timestamp::now());
        let me = self.config.identity.clone();
        let seconds =
            i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = call_opt(self.api.get(&self.config.name))
            .await
            .map_err(|e| LeaderError("read", e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match call(self.api.create(&PostParams::default(), &lease)).await {
                Ok(_) => Ok(true),
                Err(err) if err.code() == Some(409) => Ok(false),
                Err(err) => Err(LeaderError("create", err)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(me.as_str()) {
            if holder.is_some() {
                let record = (holder, spec.renew_time.clone());
                let held_for = match &self.observed {
                    Some((seen, since)) if *seen == record => since.elapsed(),
                    _ => {
                        self.observed = Some((record, Instant::now()));
                        Duration::ZERO
                    }
                };
                let valid = Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(1),
                );
                if held_for < valid {
                    return Ok(false);
                }
            }
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        // The read resourceVersion makes this a compare-and-swap.
        match call(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some(409) => Ok(false),
            Err(err) => Err(LeaderError("update", err)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby need not wait for it to expire.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = call_opt(self.api.get(&self.config.name))
            .await
            .map_err(|e| LeaderError("read", e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        call(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease),
        )
        .await
        .map(drop)
        .map_err(|e| LeaderError("release", e))
    }

    /// Waits until this replica holds the Lease; `false` if `stop` completed first.
    pub async fn acquire(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %crate::message::error_chain(&err), "leader election")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period()) => {}
                _ = stop.wait_for(|stopped| *stopped) => return false,
            }
        }
    }

    /// Renews the Lease until `stop` completes (returns `true`) or renewal fails for longer than
    /// the renew deadline or another replica took the Lease (returns `false`: leadership lost).
    pub async fn hold(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.retry_period()) => {}
                _ = stop.wait_for(|stopped| *stopped) => return true,
            }
            // Counted from before the request: the renewal is valid from when it was sent.
            let started = Instant::now();
            let left = self
                .config
                .renew_deadline()
                .saturating_sub(last_renewal.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renewal = started,
                Ok(Ok(false)) => {
                    tracing::error!("another replica holds the Lease");
                    return false;
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %crate::message::error_chain(&err), "failed to renew the Lease")
                }
                Err(_) => tracing::warn!("failed to renew the Lease: no answer in time"),
            }
            if last_renewal.elapsed() > self.config.renew_deadline() {
                tracing::error!(deadline = ?self.config.renew_deadline(), "could not renew the Lease in time");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_steps_down_one_retry_period_before_the_lease_can_be_taken_over() {
        let config = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            lease_duration: Duration::from_secs(15),
        };
        assert_eq!(config.retry_period(), Duration::from_secs(3));
        assert_eq!(config.renew_deadline(), Duration::from_secs(12));
    }
}
