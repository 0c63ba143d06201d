//! The backlog API of `examples/metrics-api-service/` and `examples/prometheus-query/`: a small
//! HTTP service that takes jobs in and hands them out to workers, and reports how many are
//! waiting. A `metrics-api` trigger reads that number from `GET /stats`; a `prometheus` trigger
//! reads it from Prometheus, which scrapes `GET /metrics`.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /stats` | `{"backlog":{"waiting":N}}` |
//! | `POST /jobs?count=N` | adds N jobs (default 1); `202` with the stats |
//! | `POST /jobs/take` | a worker takes one job: `200` with the stats, `204` when there is none |
//! | `GET /metrics` | the gauge `backlog_waiting_jobs` in Prometheus's text format |
//! | `GET /healthz` | `200 ok` |
//!
//! The backlog is a counter in memory: the jobs carry no payload, and the count is lost when
//! the service restarts. It stands in for the real thing (a database table, a job service).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{ExampleError, settings};

/// The jobs waiting, shared by every connection.
#[derive(Clone, Default)]
pub struct Backlog(Arc<AtomicU64>);

impl Backlog {
    /// Jobs waiting now.
    pub fn waiting(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Adds `n` jobs; returns the new count.
    pub fn add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::SeqCst).saturating_add(n)
    }

    /// Takes one job if there is one; returns the count left.
    pub fn take(&self) -> Option<u64> {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|before| before - 1)
    }
}

/// Serves the API on `listener` until `shutdown` completes (connections still open then are
/// dropped).
pub async fn serve(
    listener: TcpListener,
    backlog: Backlog,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ExampleError> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let backlog = backlog.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let backlog = backlog.clone();
                async move { Ok::<_, Infallible>(answer(&backlog, &request)) }
            });
            // A client that hangs up mid-request is its own problem.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer to one request.
fn answer(backlog: &Backlog, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let stats = |status: StatusCode, waiting: u64| {
        reply(
            status,
            "application/json",
            serde_json::json!({"backlog": {"waiting": waiting}}).to_string(),
        )
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/stats") => stats(StatusCode::OK, backlog.waiting()),
        (&Method::POST, "/jobs") => match count(request.uri().query()) {
            Ok(n) => stats(StatusCode::ACCEPTED, backlog.add(n)),
            Err(problem) => reply(StatusCode::BAD_REQUEST, "text/plain", problem),
        },
        (&Method::POST, "/jobs/take") => match backlog.take() {
            Some(left) => stats(StatusCode::OK, left),
            None => reply(StatusCode::NO_CONTENT, "text/plain", String::new()),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics(backlog.waiting()),
        ),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok".into()),
        (_, "/stats" | "/jobs" | "/jobs/take" | "/metrics" | "/healthz") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

/// `count` from the query string (default 1).
/// The backlog as a Prometheus scrape answers it.
fn metrics(waiting: u64) -> String {
    format!(
        "# HELP backlog_waiting_jobs Jobs waiting for a worker.\n\
         # TYPE backlog_waiting_jobs gauge\n\
         backlog_waiting_jobs {waiting}\n"
    )
}

fn count(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("count="));
    match value {
        None => Ok(1),
        Some(text) => settings::parse_number("count", text).map_err(|e| e.to_string()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_never_goes_below_zero() {
        let backlog = Backlog::default();
        assert_eq!(backlog.take(), None);
        assert_eq!(backlog.add(2), 2);
        assert_eq!(backlog.take(), Some(1));
        assert_eq!(backlog.take(), Some(0));
        assert_eq!(backlog.take(), None);
        assert_eq!(backlog.waiting(), 0);
    }

    #[test]
    fn counts_come_from_the_query() {
        assert_eq!(count(None), Ok(1));
        assert_eq!(count(Some("count=40")), Ok(40));
        assert_eq!(count(Some("x=1&count=3")), Ok(3));
        assert_eq!(
            count(Some("count=lots")),
            Err("count: expected a whole number >= 0, got \"lots\"".into())
        );
    }
}
