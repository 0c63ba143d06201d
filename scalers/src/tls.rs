//! TLS client plumbing the scalers share: PEM parsing, the `unsafeSsl` certificate verifier and
//! a rustls [`ClientConfig`] built from a trigger's PEM texts, all on the ring crypto provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ConfigError;
use crate::trigger::{Source, Trigger};

/// A trigger's TLS client settings: PEM texts as given and `unsafeSsl`. Holds a private key:
/// never printed, so no `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientTls {
    /// CA certificate(s) trusted in addition to the system roots.
    pub(crate) ca: Option<String>,
    /// Client certificate chain; used only together with `key`.
    pub(crate) cert: Option<String>,
    /// Unencrypted private key of `cert`. A secret.
    pub(crate) key: Option<String>,
    /// `unsafeSsl`: accept any server certificate.
    pub(crate) unsafe_ssl: bool,
}

/// Why PEM text was refused. The messages never quote the text (it may be a private key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// A PEM block that does not decode.
    #[error("expected PEM certificates")]
    MalformedCertificates,
    /// Well-formed text without a single certificate.
    #[error("expected PEM certificates, found none")]
    NoCertificates,
    /// No unencrypted private key (an encrypted one is not read either).
    #[error("expected an unencrypted PEM private key")]
    PrivateKey,
    /// `keyPassword` is set, but the key is not an encrypted PKCS#8 key it opens.
    #[error(
        "expected an encrypted PKCS#8 PEM key (BEGIN ENCRYPTED PRIVATE KEY) that keyPassword decrypts"
    )]
    KeyPassword,
}

/// The certificates in `pem`, at least one.
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PemError::MalformedCertificates)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificates);
    }
    Ok(certs)
}

/// The first private key in `pem`.
pub fn pem_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| PemError::PrivateKey)
}

/// The unencrypted PKCS#8 PEM of `pem`, an encrypted PKCS#8 key (`BEGIN ENCRYPTED PRIVATE
/// KEY`), opened with `password`: what KEDA's `keyPassword` reads. The result is a secret, as
/// the key is; errors never quote either.
pub fn decrypt_private_key(pem: &str, password: &str) -> Result<String, PemError> {
    use pkcs8::der::Decode as _;
    use pkcs8::der::pem::LineEnding;
    use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
    let (label, der) =
        pkcs8::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|_| PemError::KeyPassword)?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(PemError::KeyPassword);
    }
    let info = EncryptedPrivateKeyInfo::from_der(&der).map_err(|_| PemError::KeyPassword)?;
    let document = info.decrypt(password).map_err(|_| PemError::KeyPassword)?;
    // Only a well-formed key is handed on.
    PrivateKeyInfo::from_der(document.as_bytes()).map_err(|_| PemError::KeyPassword)?;
    document
        .to_pem("PRIVATE KEY", LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|_| PemError::KeyPassword)
}

/// The TriggerAuthentication parameters `ca`, `cert`, `key` and `keyPassword` as a scaler's TLS
/// settings (`unsafe_ssl` off): an encrypted PKCS#8 key is opened with `keyPassword` once, here,
/// and the PEM is checked here, so a bad certificate fails the trigger when it is built.
pub(crate) fn from_auth_params(t: &Trigger) -> Result<ClientTls, ConfigError> {
    let auth = [Source::Auth];
    let ca = t.lookup("ca", &auth)?.map(|f| f.value);
    let cert = t.lookup("cert", &auth)?.map(|f| f.value);
    let key = match (
        t.lookup("key", &auth)?.map(|f| f.value),
        t.lookup("keyPassword", &auth)?.map(|f| f.value),
    ) {
        (Some(key), Some(password)) if !password.is_empty() => Some(
            decrypt_private_key(&key, &password)
                .map_err(|p| t.error("keyPassword", p.to_string()))?,
        ),
        (key, _) => key,
    };
    if let Some(ca) = &ca {
        pem_certificates(ca).map_err(|p| t.error("ca", p.to_string()))?;
    }
    match (&cert, &key) {
        (Some(c), Some(k)) => {
            pem_certificates(c).map_err(|p| t.error("cert", p.to_string()))?;
            pem_private_key(k).map_err(|p| t.error("key", p.to_string()))?;
        }
        (Some(_), None) => return Err(t.error("key", "required when cert is set")),
        (None, Some(_)) => return Err(t.error("cert", "required when key is set")),
        (None, None) => {}
    }
    Ok(ClientTls {
        ca,
        cert,
        key,
        unsafe_ssl: false,
    })
}

/// A rustls client configuration for `tls` on the ring provider: the system roots plus `ca`
/// (or no verification at all for `unsafe_ssl`), and the client certificate if both `cert` and
/// `key` are given. The error names the setting at fault, never its content.
pub(crate) fn client_config(tls: &ClientTls) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if tls.unsafe_ssl {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate::new()))
    } else {
        let mut roots = RootCertStore::empty();
        // Unreadable system certificates are skipped: a `ca` may still make the server trusted.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(ca) = &tls.ca {
            for cert in pem_certificates(ca).map_err(|e| format!("ca: {e}"))? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca: unusable certificate: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                pem_certificates(cert).map_err(|e| format!("cert: {e}"))?,
                pem_private_key(key).map_err(|e| format!("key: {e}"))?,
            )
            .map_err(|e| format!("cert/key: unusable client certificate: {e}")),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The verifier behind `unsafeSsl: true`: accepts any server certificate, but still checks
/// that the handshake is signed by the key in it, so the connection is encrypted to whoever
/// answers.
#[derive(Debug)]
pub(crate) struct AnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyServerCertificate {
    /// With the ring provider's signature algorithms.
    pub(crate) fn new() -> Self {
        Self {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A throwaway self-signed certificate and its key, for the PEM checks only.
#[cfg(test)]
pub(crate) mod test_pem {
    pub(crate) const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfDCCASOgAwIBAgIUV5ejhdRYa5CSbG/oxpgJrbWsqZEwCgYIKoZIzj0EAwIw
EzERMA8GA1UEAwwIZWJiLXRlc3QwIBcNMjYxMTIzMTMwMzMwWhgPMjEyNjEwMzAx
MzAzMzBaMBMxETAPBgNVBAMMCGViYi10ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEurxJLhqodJ/fOhlqTN3Tm0dHEPgAAIO2l3zcR7xkd34qRSG0joMyDmV+
OmuVHXv7NkHZkb3S2dcjteFWZMigy6NTMFEwHQYDVR0OBBYEFJD8MdacTq7kd77C
jmm6HCUrqKGuMB8GA1UdIwQYMBaAFJD8MdacTq7kd77Cjmm6HCUrqKGuMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgP2PX9yGn96ssPKEVHF3b1xD7
JUmsXdNsQ3D2nbuPHQ8CIAahl98xdhAzOgE8GrDUEc2U5S54CG5tbkLgFq+9v1F1
-----END CERTIFICATE-----\n";
    pub(crate) const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgr7c914aRPG3qgLhA
RPtqUV8Jjum9/M5fkRAhxN20Sq2hRANCAAS6vEkuGqh0n986GWpM3dObR0cQ+AAA
g7aXfNxHvGR3fipFIbSOgzIOZX46a5Ude/s2QdmRvdLZ1yO14VZkyKDL
-----END PRIVATE KEY-----\n";
    /// [`KEY`] encrypted (PKCS#8, PBES2 with AES-256-CBC) with the password [`KEY_PASSWORD`].
    pub(crate) const ENCRYPTED_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhM4RjAQuFAAQICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEMo8jLgKzLqNtdizsoXummMEgZBG
wQljj0BWVfTz7S7gWWzufe88iiVpSwezC4yqqtw26Z4vsJSaGcnZYkO7zQefk2yH
r8AmbfQX0rzl0qw/Aj6B1SngPLXG4pBrIxxY1oWmicICVLqf+SzwrtfE59jd19fq
hYSxba7oHpj96UQfuA6w4hqght7UYpWIhLkMrS2n6QTD9gk10eb+Vk4/vlru/hQ=
-----END ENCRYPTED PRIVATE KEY-----\n";
    /// What opens [`ENCRYPTED_KEY`].
    pub(crate) const KEY_PASSWORD: &str = "open-sesame";
}

#[cfg(test)]
mod tests {
    use super::*;

    const MALFORMED: &str =
        "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n";

    #[test]
    fn pem_parsing() {
        assert_eq!(pem_certificates(test_pem::CERT).map(|c| c.len()), Ok(1));
        assert_eq!(pem_certificates("hunter2"), Err(PemError::NoCertificates));
        assert_eq!(
            pem_certificates(MALFORMED),
            Err(PemError::MalformedCertificates)
        );
        assert!(pem_private_key(test_pem::KEY).is_ok());
        for bad in ["hunter2", test_pem::CERT, MALFORMED] {
            assert_eq!(
                pem_private_key(bad).err(),
                Some(PemError::PrivateKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_password_opens_an_encrypted_pkcs8_key_and_nothing_else() {
        let opened =
            decrypt_private_key(test_pem::ENCRYPTED_KEY, test_pem::KEY_PASSWORD).expect("opens");
        assert_eq!(
            pem_private_key(&opened).map(|k| k.secret_der().to_vec()),
            pem_private_key(test_pem::KEY).map(|k| k.secret_der().to_vec()),
            "the same key, unencrypted"
        );
        for (pem, password) in [
            (test_pem::ENCRYPTED_KEY, "wrong"),
            (test_pem::ENCRYPTED_KEY, ""),
            // An unencrypted key with a password set: KEDA refuses it too.
            (test_pem::KEY, test_pem::KEY_PASSWORD),
            (test_pem::CERT, test_pem::KEY_PASSWORD),
            ("hunter2", test_pem::KEY_PASSWORD),
        ] {
            let err = decrypt_private_key(pem, password).unwrap_err();
            assert_eq!(err, PemError::KeyPassword, "{password}");
            assert!(!err.to_string().contains(password) || password.is_empty());
        }
        // Without the password, the encrypted key is refused as it always was.
        assert_eq!(
            pem_private_key(test_pem::ENCRYPTED_KEY).err(),
            Some(PemError::PrivateKey)
        );
    }

    #[test]
    fn client_config_for_each_setting() {
        let ok = |tls: ClientTls| {
            client_config(&tls)
                .map(drop)
                .unwrap_or_else(|e| panic!("{e}"));
        };
        ok(ClientTls::default());
        ok(ClientTls {
            unsafe_ssl: true,
            ..ClientTls::default()
        });
        ok(ClientTls {
            ca: Some(test_pem::CERT.into()),
            cert: Some(test_pem::CERT.into()),
            key: Some(test_pem::KEY.into()),
            unsafe_ssl: false,
        });
        // (settings, error); the key's text never shows.
        let cases = [
            (
                ClientTls {
                    ca: Some("hunter2".into()),
                    ..ClientTls::default()
                },
                "ca: expected PEM certificates, found none",
            ),
            (
                ClientTls {
                    cert: Some(test_pem::CERT.into()),
                    key: Some("hunter2".into()),
                    ..ClientTls::default()
                },
                "key: expected an unencrypted PEM private key",
            ),
            (
                ClientTls {
                    cert: Some(MALFORMED.into()),
                    key: Some(test_pem::KEY.into()),
                    ..ClientTls::default()
                },
                "cert: expected PEM certificates",
            ),
        ];
        for (tls, expected) in cases {
            let err = client_config(&tls).map(drop).unwrap_err();
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn any_server_certificate_still_checks_signatures_with_ring() {
        let verifier = AnyServerCertificate::new();
        assert_eq!(
            verifier.supported_verify_schemes(),
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        );
    }
}
