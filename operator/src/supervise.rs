//! The supervision of `ebb run`'s long-lived tasks: one shutdown signal reaches every task
//! (the servers, the election, the controller), and a task that ends unasked stops the rest
//! and makes the process exit non-zero rather than run on half alive.

use std::sync::Arc;

/// Why [`supervise`] stopped `ebb run`.
#[derive(Debug, thiserror::Error)]
pub enum Stopped<E> {
    /// The work (the controller or the election) failed.
    #[error(transparent)]
    Work(E),
    /// A server's task ended before shutdown was asked.
    #[error("{0} ended unasked")]
    ServerEnded(&'static str),
}

/// Waits for the controller (or the election) while watching the servers. A server that ends
/// before shutdown was asked, or work that fails, asks every other task to shut down and is
/// returned as an error, so that `ebb run` exits non-zero and Kubernetes restarts it.
pub async fn supervise<E>(
    work: impl std::future::Future<Output = Result<(), E>>,
    mut servers: tokio::task::JoinSet<&'static str>,
    shutdown: &Shutdown,
) -> Result<(), Stopped<E>> {
    tokio::pin!(work);
    let mut work_done = false;
    let failure = loop {
        tokio::select! {
            result = &mut work => {
                work_done = true;
                break result.err().map(Stopped::Work);
            }
            Some(ended) = servers.join_next() => {
                if shutdown.asked() {
                    continue;
                }
                break Some(Stopped::ServerEnded(ended.unwrap_or("a server task (it panicked)")));
            }
        }
    };
    shutdown.ask();
    // Whatever still runs gets a bounded time to finish (the leader releases its lease); a
    // finished future is never polled again.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        if !work_done {
            let _ = (&mut work).await;
        }
        while servers.join_next().await.is_some() {}
    })
    .await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The one shutdown signal of `ebb run`: turns on at SIGTERM or Ctrl-C, or when a task fails.
#[derive(Clone)]
pub struct Shutdown(Arc<tokio::sync::watch::Sender<bool>>);

impl Shutdown {
    /// A signal that is off until [`Shutdown::ask`].
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }

    /// A signal that turns on at SIGTERM or Ctrl-C.
    pub fn on_signal() -> Self {
        let this = Self::new();
        let signalled = this.clone();
        tokio::spawn(async move {
            os_signal().await;
            tracing::info!("shutting down");
            signalled.ask();
        });
        this
    }

    /// Turns the signal on.
    pub fn ask(&self) {
        self.0.send_replace(true);
    }

    /// Whether it is on.
    pub fn asked(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal is on.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            let _ = receiver.wait_for(|on| *on).await;
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_server_that_ends_unasked_stops_the_work_and_is_an_error() {
        let shutdown = Shutdown::new();
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn(async { "the admin server" });
        let stopped = shutdown.wait();
        let work = async move {
            stopped.await;
            Ok::<(), std::io::Error>(())
        };
        let result =
            tokio::time::timeout(Duration::from_secs(5), supervise(work, servers, &shutdown))
                .await
                .expect("supervise returned");
        assert!(
            matches!(result, Err(Stopped::ServerEnded("the admin server"))),
            "{result:?}"
        );
        assert!(shutdown.asked(), "the other tasks were asked to stop");
    }

    #[tokio::test]
    async fn failed_work_stops_the_servers_and_is_an_error() {
        let shutdown = Shutdown::new();
        let mut servers = tokio::task::JoinSet::new();
        let stopped = shutdown.wait();
        servers.spawn(async move {
            stopped.await;
            "the external metrics API"
        });
        let work = async { Err::<(), &str>("the controller ended unasked") };
        let result = supervise(work, servers, &shutdown).await;
        assert!(matches!(
            result,
            Err(Stopped::Work("the controller ended unasked"))
        ));
        assert!(shutdown.asked());
    }

    #[tokio::test]
    async fn servers_ending_after_shutdown_was_asked_are_no_error() {
        let shutdown = Shutdown::new();
        let mut servers = tokio::task::JoinSet::new();
        for name in ["the admin server", "the external metrics API"] {
            let stopped = shutdown.wait();
            servers.spawn(async move {
                stopped.await;
                name
            });
        }
        let stopped = shutdown.wait();
        let work = async move {
            stopped.await;
            // The controller takes a little longer than the servers to finish.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<(), &str>(())
        };
        let asker = shutdown.clone();
        tokio::spawn(async move { asker.ask() });
        assert!(supervise(work, servers, &shutdown).await.is_ok());
    }
}
