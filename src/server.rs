//! Binding, serving and graceful shutdown.
//!
//! HTTP is served thread-per-core: `http_workers` threads, each with its own single-threaded
//! tokio runtime and its own `SO_REUSEPORT` listener on the same address, so the kernel spreads
//! connections and a request never crosses threads (no work-stealing wake-ups on the hot path).
//! Background upkeep runs on the caller's runtime.
use crate::app::{App, AppState, StartError};
use crate::clock::Clock;
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop_tx: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    upkeep: JoinHandle<()>,
    external: JoinHandle<()>,
}

impl Running {
    pub fn issuer(&self) -> &str {
        &self.app.issuer
    }

    /// Stops accepting, finishes requests in flight, and waits.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop_tx.send(true);
        self.wait().await
    }

    /// Waits until the server ends (after the shutdown future resolves or `stop`).
    pub async fn wait(self) -> std::io::Result<()> {
        let workers = self.workers;
        let result = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(e),
                    Err(_) => result = Err(std::io::Error::other("an HTTP worker panicked")),
                }
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        // Every request has been answered: write what the audit queue still holds.
        self.app.audit.writer.shutdown().await;
        self.upkeep.abort();
        self.external.abort();
        result
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Start(#[from] StartError),
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// Binds `config.listen`, starts the app (database, keys, registry), and serves until
/// `shutdown` resolves or `Running::stop` is called.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    schema: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    let first = bind(config.listen).map_err(|e| ServeError::Bind(config.listen, e))?;
    let addr = first
        .local_addr()
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let workers = config.http_workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut listeners = vec![first];
    // Without SO_REUSEPORT a second bind fails; one listener then serves alone.
    for _ in 1..workers.max(1) {
        match bind(addr) {
            Ok(l) => listeners.push(l),
            Err(_) => break,
        }
    }
    let issuer = config.issuer_for(addr);
    let app = App::start(config, issuer, clock, schema).await?;
    let upkeep = app.spawn_upkeep();
    let router = crate::http::router(AppState(app.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let external = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
    };
    let mut handles = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let router = router.clone();
        let mut stop_rx = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("mandate-http-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    listener.set_nonblocking(true)?;
                    let listener = TcpListener::from_std(listener)?;
                    axum::serve(
                        listener,
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.wait_for(|stop| *stop).await;
                    })
                    .await
                })
            })
            .map_err(|e| ServeError::Bind(addr, e))?;
        handles.push(handle);
    }
    Ok(Running {
        addr,
        app,
        stop_tx,
        workers: handles,
        upkeep,
        external,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
