//! TLS for the SSL and SASL_SSL listeners, with rustls: the certificate
//! chain and key from PEM files, optional client certificates verified
//! against a CA (`--ssl-client-auth`), and a reload that swaps in a new
//! configuration for the connections accepted after it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::config::listeners::{ClientAuth, TlsFiles};

/// The TLS configuration of the broker's TLS listeners.
pub struct Tls {
    files: TlsFiles,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl Tls {
    /// Loads the files; an error names the file and the flag that gave it.
    pub fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&files)?));
        Ok(Tls {
            files,
            acceptor: ArcSwap::from_pointee(acceptor),
        })
    }

    /// Rereads the files; on an error the previous configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        self.acceptor
            .store(Arc::new(TlsAcceptor::from(Arc::new(config))));
        Ok(())
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }
}

/// The controller transport's TLS: the broker's certificate on both
/// ends, client certificates required, and only `--ssl-client-ca-file`
/// trusted either way.
pub fn controller(files: &TlsFiles) -> anyhow::Result<crate::metadata::ControllerTls> {
    let Some(ca) = &files.client_ca else {
        anyhow::bail!("the controller's TLS needs ssl-client-ca-file");
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = Arc::new(client_ca_roots(ca)?);
    let key = private_key(files)?;
    let chain = certificates("ssl-certificate-file", &files.certificate)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .context("controller client-certificate verifier")?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .context("the key does not match the certificate (ssl-certificate-file, ssl-key-file)")?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the key does not match the certificate (ssl-certificate-file, ssl-key-file)")?;
    Ok(crate::metadata::ControllerTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    })
}

/// The private key of `--ssl-key-file`.
fn private_key(files: &TlsFiles) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "cannot read the private key. ssl-key-file={}",
            files.key.display()
        )
    })
}

/// The certificates of `--ssl-client-ca-file`, as trust roots.
fn client_ca_roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("ssl-client-ca-file", ca)? {
        roots.add(cert).with_context(|| {
            format!(
                "invalid CA certificate. ssl-client-ca-file={}",
                ca.display()
            )
        })?;
    }
    Ok(roots)
}

fn certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates. {flag}={}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no PEM certificate in the file. {flag}={}", path.display());
    }
    Ok(certs)
}

fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let chain = certificates("ssl-certificate-file", &files.certificate)?;
    let key = private_key(files)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (&files.client_ca, files.client_auth) {
        (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
        (Some(ca), auth) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(client_ca_roots(ca)?),
                provider,
            );
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().with_context(|| {
                format!(
                    "cannot verify client certificates with ssl-client-ca-file={}",
                    ca.display()
                )
            })?)
        }
    };
    builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "the key does not match the certificate. ssl-certificate-file={} ssl-key-file={}",
            files.certificate.display(),
            files.key.display()
        )
    })
}
