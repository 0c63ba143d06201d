//! An external scaler plugin: serves `FileQueueScaler` over KEDA's external scaler protocol.
//!
//! Usage: `file-queue-plugin [LISTEN_ADDRESS]` (default `0.0.0.0:6000`), then point an
//! `external` (or `external-push`) trigger at it with `scalerAddress` and a `path` key.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:6000".to_string())
        .parse()?;
    eprintln!("file-queue-plugin: serving externalscaler.ExternalScaler on {addr}");
    ebb_scalers::sdk::serve(addr, ebb_examples::FileQueueScaler::build).await?;
    Ok(())
}
