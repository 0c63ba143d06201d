//! The `reqwest` plumbing HTTP scalers share: a client on a trigger's TLS settings, error text
//! that never shows the URL (it may carry credentials), a body read with a size limit, and the
//! checks of header and certificate parameters.

use reqwest::header::HeaderValue;

use crate::error::{ConfigError, error_chain};
use crate::tls::{ClientTls, client_config, pem_certificates};
use crate::trigger::Trigger;

/// Largest body an HTTP scaler reads; a larger answer is an error.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

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

/// The body of `response`, at most [`MAX_BODY_BYTES`]; the error text never shows the URL.
pub(crate) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_big = || format!("the body is larger than {MAX_BODY_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(error_message)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `value` (a credential) as an HTTP header value, marked sensitive so it is never logged.
pub(crate) fn sensitive_header(
    t: &Trigger,
    key: &str,
    value: &str,
) -> Result<HeaderValue, ConfigError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| t.error(key, "contains characters not allowed in an HTTP header"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// Checks that `key`'s `pem` holds certificates, when the trigger is built.
pub(crate) fn pem_certs(t: &Trigger, key: &str, pem: &str) -> Result<(), ConfigError> {
    pem_certificates(pem)
        .map(drop)
        .map_err(|_| t.error(key, "expected one or more PEM certificates"))
}

/// Requests one shared client sends at once, at most. reqwest opens a new connection for a
/// request that finds none idle, so 200 triggers polled at the same instant would open 200;
/// with this bound they queue for a few milliseconds instead and reuse a handful.
pub(crate) const MAX_IN_FLIGHT: usize = 4;

/// A shared `reqwest::Client` that sends at most [`MAX_IN_FLIGHT`] requests at once.
pub struct LimitedClient {
    /// The client.
    pub(crate) client: reqwest::Client,
    permits: tokio::sync::Semaphore,
}

impl LimitedClient {
    /// Wraps `client`.
    pub(crate) fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            permits: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Waits for a turn to send; the request (and its body) must be done before the permit
    /// is dropped.
    pub(crate) async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        self.permits
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }
}
