//! The backlog API: takes jobs in, hands them to workers, and reports the backlog on
//! `GET /stats` for a `metrics-api` trigger (see `ebb_examples::backlog_api`).
//!
//! Usage: `backlog-api [LISTEN_ADDRESS]` (default `0.0.0.0:8080`).

use std::net::SocketAddr;

use ebb_examples::backlog_api::{self, Backlog};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backlog-api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ebb_examples::ExampleError> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| ebb_examples::ExampleError::Setting {
            name: "LISTEN_ADDRESS",
            problem: format!("expected host:port, got {text:?}"),
        })?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("backlog-api: serving on {addr}");
    backlog_api::serve(
        listener,
        Backlog::default(),
        ebb_examples::shutdown_signal(),
    )
    .await
}
