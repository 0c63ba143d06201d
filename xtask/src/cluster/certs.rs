//! The dev cluster's PKI: a cluster CA, the apiserver's serving certificate, client certificates
//! for the admin, the controller-manager and the scheduler, the aggregation layer's front-proxy CA
//! and client, and the service-account signing key. Generated once, reused while present.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Layout;

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

/// Written last: its presence means every file of the PKI is there.
const COMPLETE_MARKER: &str = ".complete";

fn new_ca(cn: &str, dir: &Path, file: &str) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    fs::write(dir.join(format!("{file}.crt")), cert.pem())?;
    write_private(&dir.join(format!("{file}.key")), &key.serialize_pem())?;
    Ok(Issuer::new(params, key))
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
