//! The `reqwest` plumbing HTTP scalers share: a client on a trigger's TLS settings and error
//! text that never shows the URL (it may carry credentials).

use crate::error::error_chain;
use crate::tls::{ClientTls, client_config};

/// A client for `tls` (see [`client_config`]); `configure` adds the scaler's own settings
/// (timeouts, redirect policy).
pub(crate) fn client(
    tls: &ClientTls,
    configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, String> {
    configure(reqwest::Client::builder().use_preconfigured_tls(client_config(tls)?))
        .build()
        .map_err(|e| format!("HTTP client setup: {}", error_message(e)))
}

/// A reqwest error and its causes on one line, without the URL.
pub(crate) fn error_message(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}
