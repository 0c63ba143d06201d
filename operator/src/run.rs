//! What a replica runs while it leads (or at once, without leader election): the ScaledObject
//! controller and, beside it, the ScaledJob controller, under one shutdown. The ScaledJob
//! controller starts once the ScaledObject controller has cached the authentication objects
//! both read, and ends with it.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

use crate::controller::{Context, ControllerEnd};

/// Runs both controllers until `shutdown` resolves or the ScaledObject controller ends, and
/// says why they returned. Every loop either started ends with them.
pub async fn controllers(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> ControllerEnd {
    let shutdown = shutdown.boxed().shared();
    let jobs = {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = ctx.authentications_cached() => {}
                () = shutdown.clone() => return,
            }
            crate::jobs::controller::run(ctx, shutdown).await;
        })
    };
    let _jobs = AbortOnDrop(jobs);
    crate::controller::run(ctx, shutdown).await
}

/// Aborts the ScaledJob controller (and so its loops) when the ScaledObject controller ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
