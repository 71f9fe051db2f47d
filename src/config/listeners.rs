//! Kafka listeners and their security: `--listeners NAME://HOST:PORT,...`
//! with a security protocol per listener (PLAINTEXT, SSL, SASL_PLAINTEXT,
//! SASL_SSL; the name itself, or `--listener-security-protocol-map`), the
//! addresses advertised for each, the TLS files and the SASL settings.
//!
//! `--listen HOST:PORT` is the one-listener form: `PLAINTEXT://HOST:PORT`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{parse_host_port, resolve_addr, ConfigError};

/// How a listener's connections are secured (Kafka's `security.protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        Some(match name {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Clients authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One Kafka listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    /// What clients of this listener are told to connect to (port 0: the
    /// bound port); `None`: the bound address.
    pub advertised: Option<(String, u16)>,
}

/// Kafka's `ssl.client.auth`: whether TLS clients present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for, verified when given.
    Requested,
    /// Connections without a certificate signed by the CA are refused.
    Required,
}

/// The files of the TLS listeners (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// CA certificates that sign client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// A SASL mechanism the broker offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslSettings {
    pub mechanisms: Vec<Mechanism>,
    /// The PLAIN users and passwords (TOML, a `[users]` table).
    pub plain_users_file: Option<PathBuf>,
    /// How long a failed authentication waits before its answer
    /// (connection.failed.authentication.delay.ms).
    pub failed_authentication_delay_ms: u64,
    /// A session lasts this long before the client must authenticate
    /// again (connections.max.reauth.ms); 0: forever.
    pub max_reauth_ms: u64,
}

/// All listeners and their security.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    pub listeners: Vec<ListenerConfig>,
    /// Index in `listeners` of the one other brokers connect to.
    pub inter_broker: usize,
    pub tls: Option<TlsFiles>,
    pub sasl: SaslSettings,
    /// Client properties of this broker's connections to the others'
    /// inter-broker listener (needed when that listener is not PLAINTEXT).
    pub inter_broker_client_config: Option<PathBuf>,
}

impl Security {
    pub fn inter_broker(&self) -> &ListenerConfig {
        &self.listeners[self.inter_broker]
    }
}

/// The raw values of the flags this module reads.
#[derive(Default)]
pub struct SecurityArgs<'a> {
    pub listen: Option<&'a str>,
    pub advertised_listener: Option<&'a str>,
    pub listeners: Option<&'a str>,
    pub advertised_listeners: Option<&'a str>,
    pub protocol_map: Option<&'a str>,
    pub inter_broker_listener_name: Option<&'a str>,
    pub ssl_certificate_file: Option<PathBuf>,
    pub ssl_key_file: Option<PathBuf>,
    pub ssl_client_ca_file: Option<PathBuf>,
    pub ssl_client_auth: Option<&'a str>,
    pub sasl_enabled_mechanisms: Option<&'a str>,
    pub sasl_plain_users_file: Option<PathBuf>,
    pub sasl_failed_authentication_delay_ms: Option<u64>,
    pub connections_max_reauth_ms: Option<u64>,
    pub inter_broker_client_config: Option<PathBuf>,
}

/// `NAME://HOST:PORT,...` as (name, host:port) pairs.
fn named_addrs<'a>(key: &str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (name, addr) = entry.split_once("://").ok_or_else(|| {
                ConfigError::invalid(
                    key,
                    entry,
                    "expected NAME://HOST:PORT, e.g. SSL://0.0.0.0:9093",
                )
            })?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(ConfigError::invalid(
                    key,
                    entry,
                    "a listener name is upper-case letters, digits and _",
                ));
            }
            Ok((name, addr))
        })
        .collect()
}

pub fn parse(a: SecurityArgs<'_>) -> Result<Security, ConfigError> {
    let mut map = std::collections::HashMap::new();
    if let Some(m) = a.protocol_map {
        for entry in m.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, proto) = entry.split_once(':').ok_or_else(|| {
                ConfigError::invalid(
                    "listener-security-protocol-map",
                    entry,
                    "expected NAME:PROTOCOL, e.g. CLIENT:SASL_SSL",
                )
            })?;
            let proto = SecurityProtocol::parse(proto).ok_or_else(|| {
                ConfigError::invalid(
                    "listener-security-protocol-map",
                    entry,
                    "the protocol is one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
                )
            })?;
            map.insert(name.to_string(), proto);
        }
    }
    let mut listeners = Vec::new();
    match (a.listen, a.listeners) {
        (Some(l), Some(_)) => {
            return Err(ConfigError::invalid(
                "listen",
                l,
                "give --listeners or --listen, not both",
            ))
        }
        (_, Some(ls)) => {
            for (name, addr) in named_addrs("listeners", ls)? {
                let protocol = map
                    .get(name)
                    .copied()
                    .or_else(|| SecurityProtocol::parse(name))
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            "listeners",
                            name,
                            "no security protocol for this listener: name it PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, or map it with --listener-security-protocol-map",
                        )
                    })?;
                if listeners.iter().any(|l: &ListenerConfig| l.name == name) {
                    return Err(ConfigError::invalid(
                        "listeners",
                        name,
                        "listener names must be unique",
                    ));
                }
                listeners.push(ListenerConfig {
                    name: name.to_string(),
                    protocol,
                    addr: resolve_addr("listeners", addr)?,
                    advertised: None,
                });
            }
            if listeners.is_empty() {
                return Err(ConfigError::invalid("listeners", ls, "names no listener"));
            }
        }
        (l, None) => listeners.push(ListenerConfig {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            addr: resolve_addr("listen", l.unwrap_or("127.0.0.1:9092"))?,
            advertised: None,
        }),
    }
    for (i, l) in listeners.iter().enumerate() {
        let clash = listeners[..i]
            .iter()
            .any(|o| o.addr == l.addr && l.addr.port() != 0);
        if clash {
            return Err(ConfigError::invalid(
                "listeners",
                l.addr,
                "two listeners on the same address",
            ));
        }
    }
    match (a.advertised_listener, a.advertised_listeners) {
        (Some(v), Some(_)) => {
            return Err(ConfigError::invalid(
                "advertised-listener",
                v,
                "give --advertised-listeners or --advertised-listener, not both",
            ))
        }
        (Some(v), None) => {
            if listeners.len() > 1 {
                return Err(ConfigError::invalid(
                    "advertised-listener",
                    v,
                    "with several listeners, name each with --advertised-listeners NAME://HOST:PORT,...",
                ));
            }
            listeners[0].advertised = Some(parse_host_port("advertised-listener", v)?);
        }
        (None, Some(vs)) => {
            for (name, addr) in named_addrs("advertised-listeners", vs)? {
                let l = listeners
                    .iter_mut()
                    .find(|l| l.name == name)
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            "advertised-listeners",
                            name,
                            "no listener of this name in --listeners",
                        )
                    })?;
                l.advertised = Some(parse_host_port("advertised-listeners", addr)?);
            }
        }
        (None, None) => {}
    }
    let inter_broker = match a.inter_broker_listener_name {
        None => 0,
        Some(n) => listeners.iter().position(|l| l.name == n).ok_or_else(|| {
            ConfigError::invalid(
                "inter-broker-listener-name",
                n,
                "no listener of this name in --listeners",
            )
        })?,
    };
    let inter_broker_protocol = listeners[inter_broker].protocol;
    if inter_broker_protocol != SecurityProtocol::Plaintext
        && a.inter_broker_client_config.is_none()
    {
        return Err(ConfigError::invalid(
            "inter-broker-client-config",
            "",
            format!(
                "the inter-broker listener {} is {}: give the client properties brokers use to reach it (security.protocol, ssl.ca.location, sasl.*)",
                listeners[inter_broker].name,
                inter_broker_protocol.name()
            ),
        ));
    }

    let client_auth = match a.ssl_client_auth.unwrap_or("none") {
        "none" => ClientAuth::None,
        "requested" => ClientAuth::Requested,
        "required" => ClientAuth::Required,
        other => {
            return Err(ConfigError::invalid(
                "ssl-client-auth",
                other,
                "expected none, requested or required",
            ))
        }
    };
    if client_auth != ClientAuth::None && a.ssl_client_ca_file.is_none() {
        return Err(ConfigError::invalid(
            "ssl-client-auth",
            a.ssl_client_auth.unwrap_or_default(),
            "needs --ssl-client-ca-file (the CA that signs client certificates)",
        ));
    }
    let any_tls = listeners.iter().any(|l| l.protocol.tls());
    let tls = match (a.ssl_certificate_file, a.ssl_key_file) {
        (Some(certificate), Some(key)) => Some(TlsFiles {
            certificate,
            key,
            client_ca: a.ssl_client_ca_file,
            client_auth,
        }),
        (None, None) if !any_tls => None,
        (None, None) => {
            return Err(ConfigError::invalid(
                "ssl-certificate-file",
                "",
                "an SSL or SASL_SSL listener needs --ssl-certificate-file and --ssl-key-file",
            ))
        }
        (Some(c), None) => {
            return Err(ConfigError::invalid(
                "ssl-key-file",
                "",
                format!("--ssl-certificate-file {} needs its key", c.display()),
            ))
        }
        (None, Some(k)) => {
            return Err(ConfigError::invalid(
                "ssl-certificate-file",
                "",
                format!("--ssl-key-file {} needs its certificate", k.display()),
            ))
        }
    };

    let any_sasl = listeners.iter().any(|l| l.protocol.sasl());
    let mut mechanisms = Vec::new();
    for m in a
        .sasl_enabled_mechanisms
        .unwrap_or("PLAIN")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let mech = Mechanism::ALL
            .into_iter()
            .find(|k| k.name() == m)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "sasl-enabled-mechanisms",
                    m,
                    "the mechanisms Strata offers: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
                )
            })?;
        if !mechanisms.contains(&mech) {
            mechanisms.push(mech);
        }
    }
    if any_sasl && mechanisms.is_empty() {
        return Err(ConfigError::invalid(
            "sasl-enabled-mechanisms",
            "",
            "a SASL listener needs at least one mechanism",
        ));
    }
    if any_sasl && mechanisms.contains(&Mechanism::Plain) && a.sasl_plain_users_file.is_none() {
        return Err(ConfigError::invalid(
            "sasl-plain-users-file",
            "",
            "SASL mechanism PLAIN needs the users file (a TOML [users] table of name = \"password\")",
        ));
    }
    Ok(Security {
        listeners,
        inter_broker,
        inter_broker_client_config: a.inter_broker_client_config,
        tls,
        sasl: SaslSettings {
            mechanisms,
            plain_users_file: a.sasl_plain_users_file,
            failed_authentication_delay_ms: a.sasl_failed_authentication_delay_ms.unwrap_or(100),
            max_reauth_ms: a.connections_max_reauth_ms.unwrap_or(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(a: SecurityArgs<'_>) -> String {
        parse(a).expect_err("invalid").to_string()
    }

    #[test]
    fn listen_alone_is_one_plaintext_listener() {
        let s = parse(SecurityArgs {
            listen: Some("127.0.0.1:0"),
            advertised_listener: Some("broker.example:19092"),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(s.listeners.len(), 1);
        assert_eq!(s.inter_broker().name, "PLAINTEXT");
        assert_eq!(
            s.listeners[0].advertised,
            Some(("broker.example".into(), 19092))
        );
        assert!(s.tls.is_none());
    }

    #[test]
    fn listeners_take_protocols_from_names_or_the_map() {
        let scram = parse(SecurityArgs {
            listeners: Some("PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"),
            sasl_enabled_mechanisms: Some("SCRAM-SHA-512,SCRAM-SHA-256"),
            ..Default::default()
        })
        .expect("SCRAM needs no users file");
        assert_eq!(
            scram.sasl.mechanisms,
            [Mechanism::ScramSha512, Mechanism::ScramSha256]
        );
        let s = parse(SecurityArgs {
            listeners: Some("PLAINTEXT://127.0.0.1:0, CLIENT://127.0.0.1:0,SASL_SSL://127.0.0.1:0"),
            advertised_listeners: Some("CLIENT://public.example:9094"),
            protocol_map: Some("CLIENT:SSL"),
            ssl_certificate_file: Some("c.pem".into()),
            ssl_key_file: Some("k.pem".into()),
            sasl_plain_users_file: Some("users.toml".into()),
            ..Default::default()
        })
        .expect("valid");
        let protocols: Vec<_> = s.listeners.iter().map(|l| l.protocol).collect();
        assert_eq!(
            protocols,
            [
                SecurityProtocol::Plaintext,
                SecurityProtocol::Ssl,
                SecurityProtocol::SaslSsl
            ]
        );
        assert_eq!(
            s.listeners[1].advertised,
            Some(("public.example".into(), 9094))
        );
        assert_eq!(s.sasl.mechanisms, [Mechanism::Plain]);
    }

    #[test]
    fn every_invalid_combination_names_its_key() {
        let cases: Vec<(SecurityArgs<'static>, &str)> = vec![
            (
                SecurityArgs {
                    listen: Some("127.0.0.1:0"),
                    listeners: Some("PLAINTEXT://127.0.0.1:0"),
                    ..Default::default()
                },
                "listen",
            ),
            (
                SecurityArgs {
                    listeners: Some("CLIENT://127.0.0.1:0"),
                    ..Default::default()
                },
                "no security protocol",
            ),
            (
                SecurityArgs {
                    listeners: Some("plaintext://127.0.0.1:0"),
                    ..Default::default()
                },
                "upper-case",
            ),
            (
                SecurityArgs {
                    listeners: Some("PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9092"),
                    ssl_certificate_file: Some("c".into()),
                    ssl_key_file: Some("k".into()),
                    ..Default::default()
                },
                "same address",
            ),
            (
                SecurityArgs {
                    listeners: Some("PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0"),
                    ..Default::default()
                },
                "ssl-certificate-file",
            ),
            (
                SecurityArgs {
                    listeners: Some("SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0"),
                    ssl_certificate_file: Some("c".into()),
                    ssl_key_file: Some("k".into()),
                    ..Default::default()
                },
                "inter-broker-client-config",
            ),
            (
                SecurityArgs {
                    listeners: Some("PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"),
                    ..Default::default()
                },
                "sasl-plain-users-file",
            ),
            (
                SecurityArgs {
                    listeners: Some("PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"),
                    sasl_enabled_mechanisms: Some("GSSAPI"),
                    ..Default::default()
                },
                "sasl-enabled-mechanisms",
            ),
            (
                SecurityArgs {
                    listeners: Some("PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0"),
                    advertised_listeners: Some("OTHER://h:1"),
                    ssl_certificate_file: Some("c".into()),
                    ssl_key_file: Some("k".into()),
                    ..Default::default()
                },
                "advertised-listeners",
            ),
            (
                SecurityArgs {
                    listen: Some("127.0.0.1:0"),
                    ssl_client_auth: Some("required"),
                    ..Default::default()
                },
                "ssl-client-ca-file",
            ),
        ];
        for (args, want) in cases {
            let e = parse_err(args);
            assert!(e.contains(want), "{e} should name {want}");
        }
    }
}
