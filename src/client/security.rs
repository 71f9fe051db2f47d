//! Client-side security: TLS (rustls, trusting a CA file, with an
//! optional client certificate) and SASL logins (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512), from librdkafka-style properties
//! (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, ...).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use super::error::ClientError;

/// How a client secures its connections.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS, with the configuration every connection uses.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslLogin>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field(
                "sasl",
                &self.sasl.as_ref().map(|s| (&s.mechanism, &s.username)),
            )
            .finish()
    }
}

/// A SASL login.
#[derive(Clone)]
pub struct SaslLogin {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

fn invalid(key: &str, why: impl std::fmt::Display) -> ClientError {
    ClientError::Config(format!("{key}: {why}"))
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("no PEM certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

impl Security {
    /// From librdkafka-style properties; unknown keys are an error naming
    /// them.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Security, ClientError> {
        const KNOWN: &[&str] = &[
            "security.protocol",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
            "sasl.mechanism",
            "sasl.mechanisms",
            "sasl.username",
            "sasl.password",
        ];
        if let Some(k) = props.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(invalid(
                k,
                format!("unknown property; known: {}", KNOWN.join(", ")),
            ));
        }
        let get = |k: &str| props.get(k).map(String::as_str);
        let protocol = get("security.protocol")
            .unwrap_or("PLAINTEXT")
            .to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => {
                return Err(invalid(
                    "security.protocol",
                    format!("{other}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
                ))
            }
        };
        let tls = if tls {
            let ca = get("ssl.ca.location").ok_or_else(|| {
                invalid(
                    "ssl.ca.location",
                    "TLS needs the CA that signs the broker's certificate",
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates("ssl.ca.location", Path::new(ca))? {
                roots.add(c).map_err(|e| invalid("ssl.ca.location", e))?;
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid("security.protocol", e))?
                .with_root_certificates(roots);
            let config = match (get("ssl.certificate.location"), get("ssl.key.location")) {
                (Some(cert), Some(key)) => {
                    let chain = certificates("ssl.certificate.location", Path::new(cert))?;
                    let key = PrivateKeyDer::from_pem_file(key)
                        .map_err(|e| invalid("ssl.key.location", e))?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| invalid("ssl.key.location", e))?
                }
                (None, None) => builder.with_no_client_auth(),
                _ => {
                    return Err(invalid(
                        "ssl.certificate.location",
                        "give ssl.certificate.location and ssl.key.location together",
                    ))
                }
            };
            Some(Arc::new(config))
        } else {
            None
        };
        let sasl = if sasl {
            let mechanism = get("sasl.mechanism")
                .or(get("sasl.mechanisms"))
                .unwrap_or("PLAIN")
                .to_string();
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mechanism.as_str()) {
                return Err(invalid(
                    "sasl.mechanism",
                    format!("{mechanism}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                ));
            }
            let username = get("sasl.username")
                .ok_or_else(|| invalid("sasl.username", "SASL needs a user name"))?
                .to_string();
            let password = get("sasl.password")
                .ok_or_else(|| invalid("sasl.password", "SASL needs a password"))?
                .to_string();
            Some(SaslLogin {
                mechanism,
                username,
                password,
            })
        } else {
            None
        };
        Ok(Security { tls, sasl })
    }
}

/// Reads a properties file (`key=value` lines; `#` and `!` comments).
pub fn read_properties(path: &Path) -> Result<BTreeMap<String, String>, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut props = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            ClientError::Config(format!("{}:{}: expected key=value", path.display(), n + 1))
        })?;
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plaintext_by_default_and_sasl_without_tls() {
        let s = Security::from_properties(&BTreeMap::new()).expect("empty");
        assert!(s.tls.is_none() && s.sasl.is_none());
        let s = Security::from_properties(&props(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .expect("sasl");
        assert!(s.tls.is_none());
        assert_eq!(s.sasl.expect("sasl").mechanism, "SCRAM-SHA-256");
    }

    #[test]
    fn bad_properties_name_the_key() {
        for (pairs, key) in [
            (vec![("security.protcol", "SSL")], "security.protcol"),
            (vec![("security.protocol", "TLS")], "security.protocol"),
            (vec![("security.protocol", "SSL")], "ssl.ca.location"),
            (
                vec![
                    ("security.protocol", "SSL"),
                    ("ssl.ca.location", "/nonexistent.pem"),
                ],
                "ssl.ca.location",
            ),
            (
                vec![("security.protocol", "SASL_PLAINTEXT")],
                "sasl.username",
            ),
            (
                vec![
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", "GSSAPI"),
                ],
                "sasl.mechanism",
            ),
        ] {
            let e = Security::from_properties(&props(&pairs)).expect_err("invalid");
            assert!(e.to_string().contains(key), "{e} should name {key}");
        }
    }
}
