//! The serving certificate of the external metrics API, generated at startup or loaded from
//! files and reloaded when they change, and the TLS configuration that asks clients for a
//! certificate signed by the aggregator's (requestheader) CA without requiring one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the certificate failed.
    #[error("generating the serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{what}: {problem}")]
    Pem {
        /// Which file or input.
        what: String,
        /// What was wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(what: &str, problem: impl Into<String>) -> TlsError {
    TlsError::Pem {
        what: what.to_string(),
        problem: problem.into(),
    }
}

/// Certificates in a PEM text; errors name `what`.
pub fn pem_certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    ebb_scalers::pem_certificates(pem).map_err(|e| pem_error(what, e.to_string()))
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
    what: &str,
) -> Result<CertifiedKey, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| pem_error(what, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    // A certificate renewed before its key (or the reverse) is refused until both match.
    certified
        .keys_match()
        .map_err(|e| pem_error(what, format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// A certificate for `names` (DNS names or IP addresses) signed by a CA made for it; returns
/// the key and the CA's PEM (the APIService's `caBundle`).
pub fn generate(names: &[String]) -> Result<(CertifiedKey, String), TlsError> {
    let pem = generate_pem(names, "ebb metrics API CA")?;
    Ok((from_pem(&pem.chain, &pem.key, "generated key")?, pem.ca))
}

/// A generated certificate as PEM texts, to be stored and shared.
#[derive(Clone)]
pub struct GeneratedPem {
    /// The certificate, then its CA.
    pub chain: String,
    /// The private key (PKCS#8).
    pub key: String,
    /// The CA alone: the `caBundle` clients trust.
    pub ca: String,
}

/// [`generate`], as PEM texts, the CA named `ca_name`.
pub fn generate_pem(names: &[String], ca_name: &str) -> Result<GeneratedPem, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    let cert = params.signed_by(&key, &issuer)?;
    Ok(GeneratedPem {
        chain: format!("{}{}", cert.pem(), ca.pem()),
        key: key.serialize_pem(),
        ca: ca.pem(),
    })
}

/// A certificate chain and key from PEM texts; errors name `what`.
pub fn from_pem(chain: &str, key: &str, what: &str) -> Result<CertifiedKey, TlsError> {
    let chain = pem_certificates(chain, what)?;
    let key_der = ebb_scalers::pem_private_key(key).map_err(|e| pem_error(what, e.to_string()))?;
    certified_key(chain, &key_der, what)
}

/// The certificate chain and key in two PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain = pem_certificates(&read(cert)?, &cert.display().to_string())?;
    let key_der = ebb_scalers::pem_private_key(&read(key)?)
        .map_err(|e| pem_error(&key.display().to_string(), e.to_string()))?;
    certified_key(chain, &key_der, &key.display().to_string())
}

/// How often certificate files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The certificate in two PEM files, served until they change, then reloaded (checked every
/// ten seconds; must be called within a Tokio runtime).
pub fn serving_files(cert: &Path, key: &Path) -> Result<Arc<Serving>, TlsError> {
    let serving = Serving::new(load(cert, key)?);
    tokio::spawn(serving.clone().reload_on_change(
        cert.to_path_buf(),
        key.to_path_buf(),
        RELOAD_EVERY,
    ));
    Ok(serving)
}

/// Hands every handshake the current certificate; swapped when the files change.
#[derive(Debug)]
pub struct Serving(RwLock<Arc<CertifiedKey>>);

impl Serving {
    /// Serves `key` until replaced.
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self(RwLock::new(Arc::new(key))))
    }

    /// The certificate handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }

    /// Reloads the files whenever their modification time changes, checking every `every`.
    /// A bad new pair is logged and the old certificate kept. The files' times are taken when
    /// this is called, so no change made after it is missed.
    pub fn reload_on_change(
        self: Arc<Self>,
        cert: PathBuf,
        key: PathBuf,
        every: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        fn stamp(p: &Path) -> Option<SystemTime> {
            std::fs::metadata(p).and_then(|m| m.modified()).ok()
        }
        let mut seen = (stamp(&cert), stamp(&key));
        async move {
            loop {
                tokio::time::sleep(every).await;
                let now = (stamp(&cert), stamp(&key));
                if now == seen {
                    continue;
                }
                seen = now;
                match load(&cert, &key) {
                    Ok(k) => {
                        self.replace(k);
                        info!(cert = %cert.display(), "serving certificate reloaded");
                    }
                    Err(e) => warn!(error = %e, "keeping the old serving certificate"),
                }
            }
        }
    }
}

impl ResolvesServerCert for Serving {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The server configuration: our certificate; a client certificate is optional, but one that
/// is presented must chain to `client_ca_pem` (the requestheader CA), or the handshake fails.
pub fn server_config(
    serving: Arc<Serving>,
    client_ca_pem: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(client_ca_pem, "requestheader-client-ca-file")? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A server configuration that asks for no client certificate (the admission webhook's: the
/// apiserver calls it, and the checks reveal nothing but the caller's own object's problems).
pub fn server_config_without_client_auth(
    serving: Arc<Serving>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The subject CommonName of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 and HTTP/2 over TLS on `listener` until `shutdown` resolves; each
/// connection is answered by the router `route` makes from its TLS session (which holds the
/// client's certificate, if any). A client that does not finish its handshake in time, or
/// whose certificate is refused, is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
    route: impl Fn(&rustls::ServerConnection) -> axum::Router + Clone + Send + Sync + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a connection");
                    continue;
                }
            },
        };
        // Answers go out as soon as they are written: a response in two writes (HTTP/2's
        // HEADERS and DATA frames) would otherwise wait on Nagle for the peer's ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = TowerToHyperService::new(route(stream.get_ref().1));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_names_the_service_and_chains_to_its_ca() {
        let names = vec![
            "ebb-metrics.ebb-system.svc".to_string(),
            "127.0.0.1".to_string(),
        ];
        let (key, ca_pem) = generate(&names).expect("generate");
        assert_eq!(
            common_name(&key.cert[0]).as_deref(),
            Some("ebb-metrics.ebb-system.svc")
        );
        let ca = pem_certificates(&ca_pem, "ca").expect("ca");
        assert_eq!(ca.len(), 1);
        assert_eq!(key.cert[1], ca[0]);
        // The server configuration accepts that CA as a client CA too.
        assert!(server_config(Serving::new(key), &ca_pem).is_ok());
    }

    #[test]
    fn bad_pem_is_an_error_naming_the_input() {
        let err = pem_certificates("not pem", "requestheader-client-ca-file").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("requestheader-client-ca-file: expected PEM certificates"),
            "{err}"
        );
    }

    fn write_pair(dir: &Path, name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
        cert.der().clone()
    }

    #[tokio::test]
    async fn changed_files_are_served_and_a_bad_change_keeps_the_old_pair() {
        let dir = std::env::temp_dir().join(format!("ebb-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = write_pair(&dir, "first.example");
        let serving = Serving::new(load(&dir.join("tls.crt"), &dir.join("tls.key")).expect("load"));
        let watcher = tokio::spawn(serving.clone().reload_on_change(
            dir.join("tls.crt"),
            dir.join("tls.key"),
            Duration::from_millis(20),
        ));
        assert_eq!(serving.current().cert[0], first);
        let second = write_pair(&dir, "second.example");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while serving.current().cert[0] != second {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new pair was not loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A broken certificate file: the second pair stays.
        std::fs::write(dir.join("tls.crt"), "garbage").expect("write");
        let settle = tokio::time::Instant::now() + Duration::from_millis(200);
        while tokio::time::Instant::now() < settle {
            assert_eq!(serving.current().cert[0], second);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watcher.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_are_loaded_and_a_missing_one_is_named() {
        let dir = std::env::temp_dir().join(format!("ebb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
        assert!(load(&dir.join("tls.crt"), &dir.join("tls.key")).is_ok());
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.join("other.key"), other.serialize_pem()).expect("write");
        let err = load(&dir.join("tls.crt"), &dir.join("other.key")).expect_err("mismatch");
        assert!(err.to_string().contains("does not match"), "{err}");
        let err = load(&dir.join("missing.crt"), &dir.join("tls.key")).expect_err("missing");
        assert!(err.to_string().contains("missing.crt"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
