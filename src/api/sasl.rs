//! SaslHandshake and SaslAuthenticate (KIP-43, KIP-152): the client names
//! a mechanism, then sends its tokens in SaslAuthenticate requests (one
//! for PLAIN, two for SCRAM, whose credentials come from the metadata
//! view at the first round). A
//! success sets the session's principal (and, with
//! `--connections-max-reauth-ms`, when the session ends); a failure is
//! answered after the configured delay and closes the connection. A
//! client may authenticate again on the same connection (KIP-368), as the
//! same principal only.
//!
//! SaslHandshake v0 (what clients before KIP-152 send, and what librdkafka
//! before 2.10 needs to see advertised) is followed by the tokens as bare
//! frames instead of SaslAuthenticate requests: [`raw_token`] serves those
//! with the same authenticators.

use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use bytes::Bytes;

use super::error::Code;
use super::Outcome;
use crate::broker::Broker;
use crate::config::listeners::Mechanism;
use crate::metadata::ScramMechanism;
use crate::security::sasl::Refused;
use crate::security::scram::ScramServer;
use crate::security::Session;
use crate::telemetry::LogLimiter;

/// Failed authentications, logged once per 10 s at most.
static FAILED_LOG: LogLimiter = LogLimiter::new();

pub fn handshake(
    session: &mut Session,
    r: SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    let Some(sasl) = &session.listener.sasl else {
        return SaslHandshakeResponse::default().with_error_code(Code::IllegalSaslState.code());
    };
    let offered = sasl
        .settings
        .mechanisms
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect();
    let resp = SaslHandshakeResponse::default().with_mechanisms(offered);
    // A handshake starts over: an exchange in progress is dropped.
    session.scram = None;
    match sasl.mechanism(r.mechanism.as_str()) {
        Some(m) => {
            session.mechanism = Some(m);
            session.raw_tokens = version == 0;
            resp
        }
        None => resp.with_error_code(Code::UnsupportedSaslMechanism.code()),
    }
}

/// The response, and whether the connection stays open.
pub async fn authenticate(
    broker: &Broker,
    session: &mut Session,
    r: SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let illegal = |m: &'static str| {
        (
            SaslAuthenticateResponse::default()
                .with_error_code(Code::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(m))),
            false,
        )
    };
    let Some(sasl) = session.listener.sasl.clone() else {
        return illegal("SaslAuthenticate on a listener without SASL");
    };
    let Some(mechanism) = session.mechanism.take() else {
        return illegal("SaslAuthenticate before SaslHandshake");
    };
    let scram = match mechanism {
        Mechanism::Plain => None,
        Mechanism::ScramSha256 => Some(ScramMechanism::Sha256),
        Mechanism::ScramSha512 => Some(ScramMechanism::Sha512),
    };
    let outcome = match (scram, session.scram.take()) {
        (None, _) => sasl
            .authenticate_plain(&r.auth_bytes)
            .map(|user| (user, Bytes::new())),
        (Some(m), None) => {
            let lookup = |user: &str| broker.view().scram.get(user)?.get(&m).cloned();
            match ScramServer::start(m, &r.auth_bytes, lookup) {
                Ok((exchange, server_first)) => {
                    // The final round follows on this connection.
                    session.scram = Some(exchange);
                    session.mechanism = Some(mechanism);
                    return (
                        SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(server_first)),
                        true,
                    );
                }
                Err(e) => Err(e),
            }
        }
        (Some(_), Some(exchange)) => exchange
            .finish(&r.auth_bytes)
            .map(|(user, server_final)| (user, Bytes::from(server_final))),
    };
    let outcome = outcome.and_then(|(user, reply)| {
        let principal = format!("User:{user}");
        match &session.principal {
            Some(p) if **p != *principal => Err(Refused(
                "Authentication failed: re-authentication must use the same principal".into(),
            )),
            _ => Ok((principal, reply)),
        }
    });
    match outcome {
        Ok((principal, reply)) => {
            broker.metrics.sasl_authentications.inc();
            tracing::debug!(peer = %session.peer, %principal, mechanism = mechanism.name(), "authenticated");
            session.principal = Some(principal.into());
            let lifetime = sasl.settings.max_reauth_ms;
            session.expires =
                (lifetime > 0).then(|| Instant::now() + Duration::from_millis(lifetime));
            (
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(reply)
                    .with_session_lifetime_ms(i64::try_from(lifetime).unwrap_or(i64::MAX)),
                true,
            )
        }
        Err(refused) => {
            broker.metrics.sasl_authentication_failures.inc();
            if let Some(suppressed) = FAILED_LOG.allow(10_000) {
                tracing::warn!(
                    peer = %session.peer,
                    listener = %session.listener.name,
                    mechanism = mechanism.name(),
                    reason = %refused.0,
                    suppressed,
                    "SASL authentication failed; closing connection"
                );
            }
            // Slows down password guessing on this connection; others are
            // served meanwhile.
            tokio::time::sleep(Duration::from_millis(
                sasl.settings.failed_authentication_delay_ms,
            ))
            .await;
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(Code::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(refused.0))),
                false,
            )
        }
    }
}

/// A bare SASL token after a SaslHandshake v0: the answer is the server's
/// token as a bare frame (empty when PLAIN succeeds); a failure closes the
/// connection without an answer, as Kafka does for these clients.
pub async fn raw_token(broker: &Broker, session: &mut Session, token: Bytes) -> Outcome {
    let (resp, keep) = authenticate(
        broker,
        session,
        SaslAuthenticateRequest::default().with_auth_bytes(token),
    )
    .await;
    // A SCRAM exchange between its rounds keeps reading bare tokens.
    session.raw_tokens = keep && session.scram.is_some();
    if keep && resp.error_code == 0 {
        Outcome::Reply(resp.auth_bytes)
    } else {
        Outcome::Close
    }
}
