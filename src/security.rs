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

pub mod acl;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::config::listeners::{Mechanism, SecurityProtocol};
use crate::metadata::ClusterView;
use acl::{Authorizer, Operation, ResourceType};

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
    pub principal: Option<Arc<str>>,
    /// The mechanism chosen by the last SaslHandshake, until the
    /// SaslAuthenticate that follows it.
    pub mechanism: Option<Mechanism>,
    /// When the SASL session ends (`--connections-max-reauth-ms`).
    pub expires: Option<Instant>,
    /// A SCRAM exchange between its first and its final round.
    pub scram: Option<scram::ScramServer>,
    /// After a SaslHandshake v0, the SASL tokens come as bare frames (no
    /// Kafka request header) until the exchange ends.
    pub raw_tokens: bool,
}

impl Session {
    pub fn new(listener: Arc<Listener>, peer: SocketAddr) -> Session {
        let principal = (!listener.protocol.sasl()).then(|| Arc::from(ANONYMOUS));
        Session {
            listener,
            peer,
            principal,
            mechanism: None,
            expires: None,
            scram: None,
            raw_tokens: false,
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

/// The principal of a connection no authentication names.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Who sent a request, as the handlers see it: the listener it came on,
/// the authenticated principal and the peer's address, and the authorizer
/// with the ACLs of the moment (`None` without `--authorizer acl`: every
/// check passes). Built per request: without an authorizer it allocates
/// nothing.
#[derive(Clone)]
pub struct Caller {
    pub listener: Arc<Listener>,
    pub principal: Arc<str>,
    pub peer: IpAddr,
    authz: Option<Authz>,
}

/// What a checked caller's decisions need.
#[derive(Clone)]
struct Authz {
    authorizer: Arc<Authorizer>,
    view: Arc<ClusterView>,
    /// The peer's address as ACL hosts name it.
    host: String,
    /// Counts refusals (`strata_authorization_failures_total`).
    denied: prometheus_client::metrics::counter::Counter,
}

/// Refusals logged once per 10 s at most.
static DENIED_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

impl Caller {
    /// The caller of an authenticated session; `view` supplies the ACLs.
    pub fn new(
        session: &Session,
        authorizer: Option<&Arc<Authorizer>>,
        view: impl FnOnce() -> Arc<ClusterView>,
        denied: &prometheus_client::metrics::counter::Counter,
    ) -> Caller {
        Caller {
            listener: session.listener.clone(),
            principal: session
                .principal
                .clone()
                .unwrap_or_else(|| Arc::from(ANONYMOUS)),
            peer: session.peer.ip(),
            authz: authorizer.map(|a| Authz {
                authorizer: a.clone(),
                view: view(),
                host: session.peer.ip().to_string(),
                denied: denied.clone(),
            }),
        }
    }

    /// Whether requests are checked at all.
    pub fn checked(&self) -> bool {
        self.authz.is_some()
    }

    /// Whether the caller may do `op` on the resource `rt`/`name`.
    pub fn allows(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        let Some(z) = &self.authz else {
            return true;
        };
        let allowed = z
            .authorizer
            .authorize(&z.view.acls, &self.principal, &z.host, op, rt, name);
        if !allowed {
            self.refused(z, op, rt, name);
        }
        allowed
    }

    fn refused(&self, z: &Authz, op: Operation, rt: ResourceType, name: &str) {
        z.denied.inc();
        if let Some(suppressed) = DENIED_LOG.allow(10_000) {
            tracing::info!(
                principal = %self.principal,
                host = %z.host,
                operation = %op,
                resource_type = %rt,
                resource = name,
                suppressed,
                "authorization failed"
            );
        }
    }

    /// The message of an *_AUTHORIZATION_FAILED answer.
    pub fn denied_message(&self, op: Operation, rt: ResourceType, name: &str) -> String {
        format!("{} is not authorized to {op} {rt} {name}", self.principal)
    }

    /// Like [`Caller::allows`], without logging or counting a refusal:
    /// for filtering what a listing shows.
    pub fn may_see(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        self.authz.as_ref().is_none_or(|z| {
            z.authorizer
                .authorize(&z.view.acls, &self.principal, &z.host, op, rt, name)
        })
    }

    /// Whether the caller may do `op` on the cluster.
    pub fn allows_cluster(&self, op: Operation) -> bool {
        self.allows(op, ResourceType::Cluster, acl::CLUSTER_NAME)
    }

    /// `None` when the caller may do `op` on the cluster; else the message
    /// of a CLUSTER_AUTHORIZATION_FAILED answer.
    pub fn cluster_refusal(&self, op: Operation) -> Option<String> {
        (!self.allows_cluster(op))
            .then(|| self.denied_message(op, ResourceType::Cluster, acl::CLUSTER_NAME))
    }

    /// Whether the caller may do `op` on some resource of type `rt`.
    pub fn allows_any(&self, op: Operation, rt: ResourceType) -> bool {
        let Some(z) = &self.authz else {
            return true;
        };
        let allowed = z
            .authorizer
            .authorize_any(&z.view.acls, &self.principal, &z.host, op, rt);
        if !allowed {
            self.refused(z, op, rt, "(any)");
        }
        allowed
    }

    /// The bits of `ops` the caller may do on `rt`/`name` (an
    /// authorized-operations field).
    pub fn authorized_operations(&self, rt: ResourceType, name: &str, ops: &[Operation]) -> i32 {
        match &self.authz {
            None => ops.iter().fold(0, |bits, op| bits | (1 << op.code())),
            Some(z) => z.authorizer.authorized_operations(
                &z.view.acls,
                &self.principal,
                &z.host,
                rt,
                name,
                ops,
            ),
        }
    }
}
