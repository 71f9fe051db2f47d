//! Test certificates made with rcgen: a CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates (valid, expired, from
//! another CA), written as PEM files into a directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// The PEM files of a test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signed by the CA, but no longer valid.
    pub expired_client_cert: PathBuf,
    pub expired_client_key: PathBuf,
    /// A CA the broker does not trust, and a client certificate it signed.
    pub other_ca: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca")
}

/// A leaf certificate signed by `issuer`; `(pem, key pem)`.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str, expired: bool) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.distinguished_name.push(DnType::CommonName, cn);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path
}

impl Pki {
    pub fn create(dir: &Path) -> Pki {
        let root = ca("Strata test CA");
        let other = ca("Some other CA");
        let (server, server_key) = leaf(&root, "strata-broker", false);
        let (client, client_key) = leaf(&root, "strata-client", false);
        let (expired, expired_key) = leaf(&root, "strata-expired-client", true);
        let (stranger, stranger_key) = leaf(&other, "stranger", false);
        Pki {
            ca: write(dir, "ca.pem", &root.pem()),
            server_cert: write(dir, "server.pem", &server),
            server_key: write(dir, "server.key", &server_key),
            client_cert: write(dir, "client.pem", &client),
            client_key: write(dir, "client.key", &client_key),
            expired_client_cert: write(dir, "expired.pem", &expired),
            expired_client_key: write(dir, "expired.key", &expired_key),
            other_ca: write(dir, "other-ca.pem", &other.pem()),
            stranger_cert: write(dir, "stranger.pem", &stranger),
            stranger_key: write(dir, "stranger.key", &stranger_key),
        }
    }

    /// The broker flags for TLS listeners with this PKI.
    pub fn broker_args(&self) -> Vec<String> {
        vec![
            "--ssl-certificate-file".into(),
            self.server_cert.display().to_string(),
            "--ssl-key-file".into(),
            self.server_key.display().to_string(),
            "--ssl-client-ca-file".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// A TLS client configuration (rustls with aws-lc) trusting the CA
/// certificates of the PEM file `ca`.
pub fn tls_client_config(ca: &Path) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("read CA");
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    std::sync::Arc::new(config)
}
