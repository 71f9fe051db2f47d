//! Listener security: TLS ([`tls`]), SASL authentication ([`sasl`]) and the
//! per-connection [`Session`] they produce.
//!
//! Data flow: a connection accepted on a TLS listener completes its
//! handshake before its first request is read (bounded by a timeout; a
//! failed handshake is logged and counted, and the connection closed). On a
//! SASL listener the session starts unauthenticated: until SaslAuthenticate
//! succeeds (one round for PLAIN, two for SCRAM, whose credentials are in
//! cluster metadata) only ApiVersions, SaslHandshake and SaslAuthenticate are
//! served, frames are capped at [`UNAUTHENTICATED_MAX_FRAME`], and any
//! other request closes the connection. A failed authentication is answered
//! after `--sasl-failed-authentication-delay-ms`, then the connection
//! closes. With `--connections-max-reauth-ms`, a session that reaches its
//! end without the client authenticating again is closed at its next
//! request (KIP-368).
//!
//! Reload: SIGHUP rereads the certificate, key and client CA files and the
//! PLAIN users file; a file that fails to load keeps the previous contents
//! in force and logs an error naming it. Connections open at the time keep
//! what they negotiated.

pub mod sasl;
pub mod scram;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::listeners::{Mechanism, SecurityProtocol};

/// Largest request frame read from a client that has not authenticated
/// (Kafka's `sasl.server.max.receive.size`).
pub const UNAUTHENTICATED_MAX_FRAME: u32 = 512 * 1024;

/// A Kafka listener as connections see it.
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Present on SSL and SASL_SSL listeners.
    pub tls: Option<Arc<tls::Tls>>,
    /// Present on SASL listeners.
    pub sasl: Option<Arc<sasl::Sasl>>,
}

/// What a connection knows about its client.
pub struct Session {
    pub listener: Arc<Listener>,
    pub peer: SocketAddr,
    /// The authenticated principal (`User:NAME`); `User:ANONYMOUS` on
    /// listeners without SASL; `None` while a SASL client has not
    /// authenticated.
    pub principal: Option<String>,
    /// The mechanism chosen by the last SaslHandshake, until the
    /// SaslAuthenticate that follows it.
    pub mechanism: Option<Mechanism>,
    /// When the SASL session ends (`--connections-max-reauth-ms`).
    pub expires: Option<Instant>,
    /// A SCRAM exchange between its first and its final round.
    pub scram: Option<scram::ScramServer>,
}

impl Session {
    pub fn new(listener: Arc<Listener>, peer: SocketAddr) -> Session {
        let principal = (!listener.protocol.sasl()).then(|| "User:ANONYMOUS".to_string());
        Session {
            listener,
            peer,
            principal,
            mechanism: None,
            expires: None,
            scram: None,
        }
    }

    /// Whether requests other than the SASL ones may be served.
    pub fn authenticated(&self) -> bool {
        self.principal.is_some()
    }

    /// Whether the SASL session has run out (the client did not
    /// authenticate again in time).
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// The largest request frame this session may send now.
    pub fn max_frame(&self, configured: u32) -> u32 {
        if self.authenticated() {
            configured
        } else {
            configured.min(UNAUTHENTICATED_MAX_FRAME)
        }
    }
}
