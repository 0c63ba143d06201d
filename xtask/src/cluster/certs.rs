//! The dev cluster's certificates, generated once and reused while present:
//!
//! - the PKI in `pki/`: a cluster CA, the apiserver's serving certificate, client certificates
//!   for the admin, the controller-manager and the scheduler, the aggregation layer's
//!   front-proxy CA and client, and the service-account signing key; and the kubeconfigs made
//!   from it;
//! - the TLS services' certificates in `service-tls/` (a CA, a server certificate for
//!   127.0.0.1/localhost and a client certificate), which the TLS Redis and RabbitMQ's TLS
//!   listeners share.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Layout;
use super::services::apiserver_url;

/// Client identity of the controller-manager.
///
/// It runs every controller under its own identity (no per-controller service accounts, since
/// the dev cluster has no token controller), which needs more than the bootstrap
/// `system:kube-controller-manager` role grants; so it is put in `system:masters`.
const CONTROLLER_MANAGER_SUBJECT: (&str, &str) =
    ("system:kube-controller-manager", "system:masters");
/// The scheduler's bootstrap role is sufficient.
const SCHEDULER_SUBJECT: (&str, &str) = ("system:kube-scheduler", "");
/// The admin kubeconfig's identity.
const ADMIN_SUBJECT: (&str, &str) = ("ebb-dev-admin", "system:masters");
/// The name the apiserver's `--requestheader-allowed-names` accepts for the aggregator.
pub const FRONT_PROXY_CLIENT_NAME: &str = "front-proxy-client";

/// Writes the PKI under `layout.pki()` unless a complete one is already there; returns whether
/// it was (re)generated, in which case anything using the old one must restart.
///
/// The files are written to a scratch directory and renamed into place, so an interrupted run
/// never leaves a mixture of old and new certificates.
pub fn ensure(layout: &Layout) -> Result<bool> {
    let final_dir = layout.pki();
    if final_dir.join(COMPLETE_MARKER).exists() {
        return Ok(false);
    }
    let dir = layout.root.join("pki.partial");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    println!("  generating certificates in {}", final_dir.display());

    let ca = new_ca("ebb-dev-cluster-ca", &dir, "ca")?;
    let mut serving = leaf_params("kube-apiserver", "")?;
    serving.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("kubernetes".try_into()?),
        SanType::DnsName("kubernetes.default".try_into()?),
        SanType::DnsName("kubernetes.default.svc".try_into()?),
        SanType::DnsName("kubernetes.default.svc.cluster.local".try_into()?),
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write_leaf(serving, &ca, &dir, "apiserver")?;
    for (file, (cn, org)) in [
        ("admin", ADMIN_SUBJECT),
        ("controller-manager", CONTROLLER_MANAGER_SUBJECT),
        ("scheduler", SCHEDULER_SUBJECT),
    ] {
        write_leaf(client_params(cn, org)?, &ca, &dir, file)?;
    }

    let front_proxy_ca = new_ca("ebb-dev-front-proxy-ca", &dir, "front-proxy-ca")?;
    write_leaf(
        client_params(FRONT_PROXY_CLIENT_NAME, "")?,
        &front_proxy_ca,
        &dir,
        "front-proxy-client",
    )?;

    // The apiserver accepts an ECDSA key for both verifying and signing service-account tokens.
    let sa = KeyPair::generate()?;
    write_private(&dir.join("sa.key"), &sa.serialize_pem())?;
    // The verifying side reads public keys only (PKCS#8 private keys are not recognised there).
    fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
    fs::write(dir.join(COMPLETE_MARKER), "")?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&dir, &final_dir)
        .with_context(|| format!("moving certificates into {}", final_dir.display()))?;
    Ok(true)
}

/// Written last: its presence means every file of the PKI (or of the service TLS set) is there.
const COMPLETE_MARKER: &str = ".complete";

/// Writes the admin kubeconfig and the components' kubeconfigs from the PKI.
pub fn write_kubeconfigs(layout: &Layout) -> Result<()> {
    let pki = layout.pki();
    let read = |f: String| -> Result<String> {
        Ok(BASE64.encode(fs::read(pki.join(&f)).with_context(|| format!("reading {f}"))?))
    };
    for (file, cert) in [
        (layout.kubeconfig(), "admin"),
        (
            layout.component_kubeconfig("controller-manager"),
            "controller-manager",
        ),
        (layout.component_kubeconfig("scheduler"), "scheduler"),
    ] {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ebb-dev\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: ebb-dev\n  context:\n    cluster: ebb-dev\n    user: {cert}\n    namespace: default\ncurrent-context: ebb-dev\nusers:\n- name: {cert}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            apiserver_url(),
            read("ca.crt".into())?,
            read(format!("{cert}.crt"))?,
            read(format!("{cert}.key"))?,
        );
        write_private(&file, &text)?;
    }
    Ok(())
}

/// A file of the TLS services' certificate set: `ca.crt`, `server.crt`/`.key`, `client.crt`/`.key`.
///
/// They live outside `pki/`, which is regenerated as a whole.
pub fn service_tls_file(layout: &Layout, name: &str) -> PathBuf {
    layout.root.join("service-tls").join(name)
}

/// Writes the TLS services' CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate unless a complete set exists; returns whether they were (re)generated, in which
/// case the services using them must restart.
pub fn ensure_service_tls(layout: &Layout) -> Result<bool> {
    let dir = service_tls_file(layout, "");
    let marker = dir.join(COMPLETE_MARKER);
    if marker.exists() {
        return Ok(false);
    }
    fs::create_dir_all(&dir)?;
    let (ca_pem, ca) = self_signed_ca(
        "ebb-dev-tls-ca",
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
    )?;
    fs::write(dir.join("ca.crt"), ca_pem)?;
    for (file, purpose, sans) in [
        (
            "server",
            ExtendedKeyUsagePurpose::ServerAuth,
            vec![
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::DnsName("localhost".try_into()?),
            ],
        ),
        ("client", ExtendedKeyUsagePurpose::ClientAuth, vec![]),
    ] {
        let mut params = leaf_params(&format!("ebb-dev-tls-{file}"), "")?;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![purpose];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        write_leaf(params, &ca, &dir, file)?;
    }
    fs::write(&marker, "")?;
    println!(
        "  generated the TLS Redis's certificates in {}",
        dir.display()
    );
    Ok(true)
}

/// Writes a CA (`ca.crt`) and one certificate for both ends of a mutual TLS link
/// (`tls.crt`, `tls.key`; server and client use, naming `names`: IP addresses or DNS names)
/// into `dir`, unless a complete set is there. KEDA's operator and adapter share such a set.
pub fn ensure_mutual_tls(dir: &Path, names: &[&str]) -> Result<()> {
    let marker = dir.join(COMPLETE_MARKER);
    if marker.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let (ca_pem, ca) = self_signed_ca(
        "ebb-dev-mutual-tls-ca",
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
    )?;
    fs::write(dir.join("ca.crt"), ca_pem)?;
    let mut params = leaf_params("ebb-dev-mutual-tls", "")?;
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName((*name).try_into()?)),
        })
        .collect::<Result<_>>()?;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    write_leaf(params, &ca, dir, "tls")?;
    fs::write(&marker, "")?;
    Ok(())
}

/// A CA of the PKI: its certificate and key written to `dir/<file>.crt` and `.key`.
fn new_ca(cn: &str, dir: &Path, file: &str) -> Result<Issuer<'static, KeyPair>> {
    let (pem, issuer) = self_signed_ca(
        cn,
        vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ],
    )?;
    fs::write(dir.join(format!("{file}.crt")), pem)?;
    write_private(
        &dir.join(format!("{file}.key")),
        &issuer.key().serialize_pem(),
    )?;
    Ok(issuer)
}

/// A new self-signed CA: its PEM certificate and the issuer that signs with its key.
fn self_signed_ca(
    cn: &str,
    key_usages: Vec<KeyUsagePurpose>,
) -> Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = key_usages;
    let pem = params.self_signed(&key)?.pem();
    Ok((pem, Issuer::new(params, key)))
}

fn leaf_params(cn: &str, org: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if !org.is_empty() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    Ok(params)
}

fn client_params(cn: &str, org: &str) -> Result<CertificateParams> {
    let mut params = leaf_params(cn, org)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn write_leaf(
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    file: &str,
) -> Result<()> {
    let key = KeyPair::generate()?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing {file}"))?;
    fs::write(dir.join(format!("{file}.crt")), cert.pem())?;
    write_private(&dir.join(format!("{file}.key")), &key.serialize_pem())
}

/// Writes a file readable by its owner only (keys, kubeconfigs).
pub(super) fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch_layout(name: &str) -> Layout {
        let root =
            std::env::temp_dir().join(format!("ebb-certs-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Layout { root }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_pki_and_kubeconfigs_are_written_once() {
        let layout = scratch_layout("pki");
        assert!(ensure(&layout).unwrap(), "a new PKI");
        assert!(!ensure(&layout).unwrap(), "a complete PKI is kept");
        write_kubeconfigs(&layout).unwrap();
        for kubeconfig in [
            layout.kubeconfig(),
            layout.component_kubeconfig("controller-manager"),
            layout.component_kubeconfig("scheduler"),
        ] {
            let text = fs::read_to_string(&kubeconfig).unwrap();
            assert!(text.contains(&apiserver_url()), "{}", kubeconfig.display());
            assert_eq!(mode(&kubeconfig), 0o600, "{}", kubeconfig.display());
        }
        let _ = fs::remove_dir_all(&layout.root);
    }

    #[test]
    fn the_service_tls_set_is_written_once() {
        let layout = scratch_layout("service-tls");
        assert!(ensure_service_tls(&layout).unwrap(), "a new set");
        assert!(
            !ensure_service_tls(&layout).unwrap(),
            "a complete set is kept"
        );
        for file in ["ca.crt", "server.crt", "client.crt"] {
            let pem = fs::read_to_string(service_tls_file(&layout, file)).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{file}");
        }
        for key in ["server.key", "client.key"] {
            assert_eq!(mode(&service_tls_file(&layout, key)), 0o600, "{key}");
        }
        // Only the CA's certificate is written: the set is regenerated whole, never extended.
        assert!(!service_tls_file(&layout, "ca.key").exists());
        let _ = fs::remove_dir_all(&layout.root);
    }
}
