//! The dev cluster's Prometheus exporter: `ebb-dev-exporter <port>` (see `cluster::exporter`).

fn main() -> anyhow::Result<()> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("usage: ebb-dev-exporter <port>"))?;
    xtask::cluster::exporter::serve(port)
}
