//! Binding, serving and graceful shutdown.
//!
//! HTTP is served thread-per-core: `http_workers` threads, each with its own single-threaded
//! tokio runtime. One acceptor on the caller's runtime hands connections to the workers in
//! turn; from then on a connection and its requests stay on one thread (no work-stealing
//! wake-ups on the hot path). One listening socket, so no other process or server can share the
//! port (`SO_REUSEPORT` would allow that with port 0). Background upkeep runs on the caller's
//! runtime.
use crate::app::{App, AppState, StartError};
use crate::clock::Clock;
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop_tx: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    upkeep: Vec<JoinHandle<()>>,
    external: JoinHandle<()>,
    acceptor: JoinHandle<()>,
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
        for t in &self.upkeep {
            t.abort();
        }
        self.external.abort();
        self.acceptor.abort();
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

/// A worker's share of the connections: what the acceptor hands it.
pub struct Handoff {
    rx: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handoff {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.rx.recv().await {
                Some((stream, peer)) => match TcpStream::from_std(stream) {
                    Ok(s) => return (s, peer),
                    Err(e) => tracing::warn!(error = %e, "cannot adopt a connection"),
                },
                // The acceptor has stopped: no more connections, ever.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The caller's address, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Handoff>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Handoff>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Accepts connections and deals them to the workers in turn, until `stop`.
async fn accept_loop(
    listener: TcpListener,
    workers: Vec<mpsc::Sender<(std::net::TcpStream, SocketAddr)>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        if let Some(tx) = workers.get(next % workers.len().max(1)) {
            let _ = tx.send((std_stream, peer)).await;
        }
        next = next.wrapping_add(1);
    }
}

/// Binds `config.listen`, starts the app (database, keys, registry), and serves until
/// `shutdown` resolves or `Running::stop` is called.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    schema: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let workers = config
        .http_workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
        .max(1);
    let issuer = config.issuer_for(addr);
    let app = App::start(config, issuer, clock, schema).await?;
    let upkeep = app.spawn_upkeep();
    let router = crate::http::router(AppState(app.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    app.approvals.close_on(stop_rx.clone());
    let external = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
    };
    let mut handles = Vec::new();
    let mut senders = Vec::new();
    for i in 0..workers {
        let (tx, rx) = mpsc::channel(1024);
        senders.push(tx);
        let handoff = Handoff { rx, local: addr };
        let router = router.clone();
        let mut stop_rx = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("mandate-http-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    axum::serve(
                        handoff,
                        router.into_make_service_with_connect_info::<Peer>(),
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
    let acceptor = tokio::spawn(accept_loop(listener, senders, stop_rx.clone()));
    Ok(Running {
        addr,
        app,
        stop_tx,
        workers: handles,
        upkeep,
        external,
        acceptor,
    })
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called (not
/// when first polled), so a signal that arrives right after start-up is not missed.
pub fn termination_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
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
}
