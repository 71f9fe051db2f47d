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

pub(crate) fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
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

/// The principal of a client certificate, as Kafka's default mapping
/// names it: `User:` and the subject's distinguished name in RFC 2253 form
/// (most specific attribute first, such as `User:CN=alice,OU=eng,O=Example`).
/// `None` when the certificate cannot be parsed.
pub fn certificate_principal(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|a| {
                    let oid = a.attr_type().to_id_string();
                    match (short_name(&oid), a.as_str()) {
                        (Some(name), Ok(v)) => format!("{name}={}", escape_dn_value(v)),
                        // Unknown types and non-string values: the OID and
                        // the value's DER as hex, as RFC 2253 writes them.
                        _ => {
                            let mut hex = String::from("#");
                            use x509_parser::asn1_rs::ToDer;
                            for b in a.attr_value().to_der_vec().unwrap_or_default() {
                                hex.push_str(&format!("{b:02x}"));
                            }
                            format!("{oid}={hex}")
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    let dn: Vec<String> = rdns.into_iter().rev().collect();
    Some(format!("User:{}", dn.join(",")))
}

/// RFC 2253's names of the attribute types it names.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Escapes an attribute value as RFC 2253 does.
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod principal_tests {
    use super::*;

    #[test]
    fn the_subject_is_named_most_specific_first() {
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc");
        dn.push(rcgen::DnType::OrganizationalUnitName, "eng");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_principal(cert.der()).as_deref(),
            Some("User:CN=alice,OU=eng,O=Example\\, Inc,C=US")
        );
        assert_eq!(certificate_principal(b"not a certificate"), None);
    }
}
