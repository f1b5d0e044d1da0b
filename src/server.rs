//! Binding, serving and graceful shutdown.
use crate::app::{App, AppState, StartError};
use crate::clock::Clock;
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<()>>,
    upkeep: JoinHandle<()>,
}

impl Running {
    pub fn issuer(&self) -> &str {
        &self.app.issuer
    }

    /// Stops accepting, finishes requests in flight, and waits.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.upkeep.abort();
        self.handle.await.unwrap_or(Ok(()))
    }

    /// Waits until the server ends (after `shutdown` resolves).
    pub async fn wait(self) -> std::io::Result<()> {
        let r = self.handle.await.unwrap_or(Ok(()));
        self.upkeep.abort();
        r
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Start(#[from] StartError),
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
    let issuer = config.issuer_for(addr);
    let app = App::start(config, issuer, clock, schema).await?;
    let upkeep = app.spawn_upkeep();
    let router = crate::http::router(AppState(app.clone()));
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = rx => {}
                () = shutdown => {}
            }
        })
        .await
    });
    Ok(Running {
        addr,
        app,
        shutdown: Some(tx),
        handle,
        upkeep,
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
