//! Entry points for fuzzing what a client sends before anything trusts
//! it: request frames (the header and body decoders), SASL/PLAIN tokens,
//! SCRAM messages, TLS handshake bytes and client certificates. The
//! `cargo fuzz` targets in `fuzz/` call these, and `tests/fuzz_corpus.rs`
//! replays the seed corpus and random inputs through them in the default
//! test command. Each must return for any input, without panicking.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use crate::config::listeners::{ClientAuth, Mechanism, SaslSettings, TlsFiles};
use crate::metadata::{ScramCredential, ScramMechanism};
use crate::security::sasl::Sasl;
use crate::security::scram::{self, ScramServer};

/// One request frame (after its length prefix), as a connection serves it
/// up to dispatch: the key and version checks, then the decoders.
pub fn request_frame(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return;
    };
    if !crate::api::versions::accepted(api_key, version) {
        return;
    }
    let mut frame = Bytes::copy_from_slice(data);
    let _ = crate::api::decode_request(api_key, version, &mut frame);
}

/// The state the SASL and TLS targets run against: a PLAIN users file and
/// a server certificate from a fixtures directory (`fuzz/fixtures`).
pub struct Fixtures {
    sasl: Sasl,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl Fixtures {
    /// Loads `users.toml`, `server.pem`, `server.key` and `ca.pem` from
    /// `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Fixtures> {
        let sasl = Sasl::load(SaslSettings {
            mechanisms: vec![Mechanism::Plain],
            plain_users_file: Some(dir.join("users.toml")),
            failed_authentication_delay_ms: 0,
            max_reauth_ms: 0,
        })?;
        let tls = crate::security::tls::server_config(&TlsFiles {
            certificate: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: Some(dir.join("ca.pem")),
            client_auth: ClientAuth::Requested,
        })?;
        Ok(Fixtures {
            sasl,
            tls: Arc::new(tls),
        })
    }

    /// The fixtures of this repository's `fuzz/fixtures`, loaded once per
    /// process.
    pub fn shared() -> &'static Fixtures {
        static SHARED: OnceLock<Fixtures> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixtures");
            Fixtures::load(&dir).expect("fuzz/fixtures")
        })
    }

    /// A SASL/PLAIN token.
    pub fn sasl_plain(&self, data: &[u8]) {
        let _ = self.sasl.authenticate_plain(data);
    }

    /// Bytes a client sends on a TLS listener before its first request:
    /// the server side of the handshake, as far as the bytes take it, and
    /// the principal of any client certificate it accepted.
    pub fn tls_handshake(&self, mut data: &[u8]) {
        let Ok(mut conn) = tokio_rustls::rustls::ServerConnection::new(self.tls.clone()) else {
            return;
        };
        while !data.is_empty() {
            match conn.read_tls(&mut data) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                break;
            }
            let mut out = Vec::new();
            while conn.wants_write() {
                if conn.write_tls(&mut out).is_err() {
                    break;
                }
            }
        }
        if let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) {
            let _ = crate::security::tls::certificate_principal(leaf);
        }
    }
}

/// A SCRAM exchange (SHA-256 and SHA-512): `data` split at its first NUL into the
/// client's first and final messages, against a known user `alice`.
pub fn scram(data: &[u8]) {
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // Salting is slow on purpose: once per process.
    static CREDENTIALS: OnceLock<Vec<ScramCredential>> = OnceLock::new();
    let credentials = CREDENTIALS.get_or_init(|| {
        ScramMechanism::ALL
            .iter()
            .map(|m| {
                let salted = scram::salted_password(*m, b"alice-secret", b"salt", 4096);
                scram::credential(*m, &salted, b"salt", 4096)
            })
            .collect()
    });
    for (mechanism, credential) in ScramMechanism::ALL.into_iter().zip(credentials) {
        let lookup = |user: &str| (user == "alice").then(|| credential.clone());
        if let Ok((exchange, _)) = ScramServer::start(mechanism, first, lookup) {
            let _ = exchange.finish(last);
        }
    }
}

/// A client certificate's DER.
pub fn certificate_principal(data: &[u8]) {
    let _ = crate::security::tls::certificate_principal(data);
}
