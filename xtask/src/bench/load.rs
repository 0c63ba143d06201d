//! A small HTTPS load generator: for the metrics API scenario, `concurrency` threads, each with
//! one keep-alive TLS connection (client certificate, extra headers), sending GETs back to back
//! for a fixed time and timing each answer; for the admission scenario, POSTs one after the
//! other on one connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where and as whom to send.
#[derive(Clone)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// PEM CA that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate and PKCS#8 key.
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Vec<u8>,
    /// Extra request headers (`X-Remote-User: ...`).
    pub headers: Vec<(String, String)>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Answers with status 200.
    pub ok: u64,
    /// Other answers and failed requests.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Latencies of the 200 answers, sorted.
    pub latencies: Vec<Duration>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Outcome {
    /// The `q` quantile of the latencies (nearest rank).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        Some(self.latencies[rank - 1])
    }

    /// Answers per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

fn config(target: &Target) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&target.ca_pem) {
        roots.add(cert.context("the CA PEM")?)?;
    }
    let chain = CertificateDer::pem_slice_iter(&target.client_cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the client certificate PEM")?;
    let key =
        PrivateKeyDer::from_pem_slice(&target.client_key_pem).context("the client key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(target: &Target, config: &Arc<rustls::ClientConfig>) -> Result<BufReader<Stream>> {
    let name = ServerName::try_from(target.server_name.clone())?;
    let tcp = TcpStream::connect(&target.address)
        .with_context(|| format!("connecting to {}", target.address))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let connection = rustls::ClientConnection::new(config.clone(), name)?;
    Ok(BufReader::new(rustls::StreamOwned::new(connection, tcp)))
}

/// Sends one GET (or, with a body, a POST of JSON) on `stream` and reads the answer: its
/// status code.
fn send(
    stream: &mut BufReader<Stream>,
    target: &Target,
    path: &str,
    body: Option<&[u8]>,
) -> Result<u16> {
    let method = if body.is_some() { "POST" } else { "GET" };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
        target.server_name
    );
    for (name, value) in &target.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.get_mut().write_all(&bytes)?;
    stream.get_mut().flush()?;

    let mut line = String::new();
    stream.read_line(&mut line)?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("a malformed status line {line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            bail!("the connection closed inside the headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)?;
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length.context("an answer without Content-Length")?];
        stream.read_exact(&mut body)?;
    }
    Ok(code)
}

/// Sends GETs for `paths` (round robin) from `concurrency` connections for `duration`, each
/// connection sending its next request as soon as the last is answered (closed loop).
pub fn run(
    target: &Target,
    paths: &[String],
    concurrency: usize,
    duration: Duration,
) -> Result<Outcome> {
    drive(target, paths, concurrency, duration, None)
}

/// Sends GETs for `paths` (round robin) at `rate` requests a second for `duration`, whatever
/// the answers' pace (open loop), spread over `connections` keep-alive connections. Each
/// request has its slot on a fixed schedule, and its latency is counted from that slot, not
/// from when a busy connection got to send it: a slow server is not allowed to slow the load
/// down and hide its own queueing.
pub fn run_at_rate(
    target: &Target,
    paths: &[String],
    rate: f64,
    connections: usize,
    duration: Duration,
) -> Result<Outcome> {
    if !rate.is_finite() || rate <= 0.0 {
        bail!("an open-loop rate must be above 0, not {rate}");
    }
    drive(target, paths, connections, duration, Some(rate))
}

fn drive(
    target: &Target,
    paths: &[String],
    concurrency: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Result<Outcome> {
    let config = config(target)?;
    if paths.is_empty() {
        bail!("no paths to ask for");
    }
    let concurrency = concurrency.max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (target, config, paths) = (target.clone(), config.clone(), paths.to_vec());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let (mut errors, mut first_error) = (0u64, None);
                let mut stream = None;
                let mut i = worker;
                loop {
                    // Request i's slot: now (closed loop), or started + i / rate.
                    let slot = match rate {
                        None => Instant::now(),
                        Some(rate) => started + Duration::from_secs_f64(i as f64 / rate),
                    };
                    if slot >= deadline {
                        break;
                    }
                    if let Some(wait) = slot.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let path = &paths[i % paths.len()];
                    i += concurrency;
                    let answer = (|| {
                        if stream.is_none() {
                            stream = Some(connect(&target, &config)?);
                        }
                        send(
                            stream.as_mut().context("no connection")?,
                            &target,
                            path,
                            None,
                        )
                    })();
                    match answer {
                        Ok(200) => latencies.push(slot.elapsed()),
                        Ok(code) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{path}: HTTP {code}"));
                        }
                        Err(e) => {
                            errors += 1;
                            stream = None;
                            first_error.get_or_insert_with(|| format!("{path}: {e:#}"));
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut outcome = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, errors, first_error) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        outcome.ok += latencies.len() as u64;
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort();
    Ok(outcome)
}

/// POSTs `bodies` to `path` one after the other on one keep-alive connection, as the
/// apiserver calls a webhook, timing each answer.
pub fn post_each(target: &Target, path: &str, bodies: &[Vec<u8>]) -> Result<Outcome> {
    let config = config(target)?;
    let started = Instant::now();
    let mut outcome = Outcome {
        ok: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::with_capacity(bodies.len()),
        elapsed: Duration::ZERO,
    };
    let mut stream = None;
    for body in bodies {
        let sent = Instant::now();
        let answer = (|| {
            if stream.is_none() {
                stream = Some(connect(target, &config)?);
            }
            send(
                stream.as_mut().context("no connection")?,
                target,
                path,
                Some(body),
            )
        })();
        match answer {
            Ok(200) => {
                outcome.ok += 1;
                outcome.latencies.push(sent.elapsed());
            }
            Ok(code) => {
                outcome.errors += 1;
                outcome
                    .first_error
                    .get_or_insert_with(|| format!("HTTP {code}"));
            }
            Err(e) => {
                outcome.errors += 1;
                stream = None;
                outcome.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let outcome = Outcome {
            ok: 100,
            errors: 0,
            first_error: None,
            latencies: (1..=100).map(Duration::from_millis).collect(),
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(outcome.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(outcome.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(outcome.quantile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(outcome.throughput(), 50.0);
    }
}
