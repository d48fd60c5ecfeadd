//! Starting and stopping an emulator: [`Emulator::start`] binds `127.0.0.1` (port 0 by default),
//! serves in a background task and hands back an [`EmulatorHandle`] with the URL, a kubeconfig,
//! ready `kube::Client`s and the fault switches. Dropping the handle shuts the server down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{self, App};

/// The emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding the listening socket failed.
    #[error("failed to bind {addr}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Entry point: `Emulator::start().await?` in a test, or the `kube-emulator` binary.
#[derive(Debug)]
pub struct Emulator;

/// Settings of [`Emulator::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Watch events kept for `resourceVersion` resumes (see [`crate::store::EVENT_LOG_CAPACITY`]);
    /// small values let tests provoke 410 Gone relists.
    pub event_log_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            event_log_capacity: crate::store::EVENT_LOG_CAPACITY,
        }
    }
}

impl Emulator {
    /// Serves on `127.0.0.1` with an ephemeral port.
    pub async fn start() -> Result<EmulatorHandle, StartError> {
        Emulator::start_with(Options::default()).await
    }

    /// Serves on `addr` (use port 0 for an ephemeral port).
    pub async fn start_on(addr: SocketAddr) -> Result<EmulatorHandle, StartError> {
        Emulator::start_with(Options {
            addr,
            ..Options::default()
        })
        .await
    }

    /// Serves with explicit [`Options`].
    pub async fn start_with(options: Options) -> Result<EmulatorHandle, StartError> {
        let addr = options.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let app = App::new(addr.to_string(), options.event_log_capacity);
        let (stop, stopped) = oneshot::channel::<()>();
        let router = http::router(app.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "kube emulator server failed");
            }
        });
        Ok(EmulatorHandle {
            addr,
            app,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running emulator. Shuts down when dropped (open watches end, the port is released).
#[derive(Debug)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for kubectl/helm: one cluster at [`Self::url`], an anonymous user, namespace
    /// `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// A `kube::Config` pointing at the emulator, with kube's defaults (including its retry of
    /// 503 responses). Adjust it (e.g. `default_retry = false`) before building a client.
    pub fn config(&self) -> kube::Config {
        let uri = self
            .url()
            .parse()
            .expect("a socket address always forms a valid URI");
        kube::Config::new(uri)
    }

    /// A `kube::Client` for the emulator, as the operator would build one.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config())
            .expect("a plain-HTTP config without credentials always builds")
    }

    /// While `true`, every request answers 503 ServiceUnavailable and open watches are closed.
    pub fn set_unavailable(&self, down: bool) {
        self.app.set_unavailable(down);
    }

    /// A restart of the API server: down (every request 503, open watches closed) for
    /// `outage`, then back with an empty watch cache, so every watch resumed from before the
    /// restart answers 410 Gone ("too old resource version") and must relist, as after a real
    /// kube-apiserver restart. Objects survive.
    pub async fn restart(&self, outage: Duration) {
        self.app.set_unavailable(true);
        tokio::time::sleep(outage).await;
        self.app.mutate(|state| state.store.restart());
        self.app.set_unavailable(false);
    }

    /// Delays every request by `latency` (zero to turn off).
    pub fn set_latency(&self, latency: Duration) {
        self.app.set_latency(latency);
    }

    /// The current global resourceVersion (for tests asserting on watch start points).
    pub fn resource_version(&self) -> u64 {
        self.app.lock().store.revision()
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn signal_stop(&mut self) {
        // Ending watches first lets graceful shutdown finish instead of waiting on open streams.
        self.app.set_unavailable(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// A kubeconfig for a server at `url` with an anonymous user.
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-emulator\n  cluster:\n    server: {url}\n\
         users:\n- name: kube-emulator\n  user: {{}}\ncontexts:\n- name: kube-emulator\n  context:\n    \
         cluster: kube-emulator\n    user: kube-emulator\n    namespace: default\n\
         current-context: kube-emulator\npreferences: {{}}\n"
    )
}
