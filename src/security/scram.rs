//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses
//! them: two SaslAuthenticate rounds, no channel binding, credentials
//! (salt, iterations, stored key, server key) from cluster metadata.
//!
//! Round 1: the client's first message (`n,,n=USER,r=CNONCE`) is answered
//! with the server's (`r=CNONCE+SNONCE,s=SALT,i=ITERATIONS`). Round 2: the
//! client's final message carries its proof; the server checks it against
//! the stored key and answers its own signature (`v=...`), which proves
//! to the client that the server knows the credential too.

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::sasl::Refused;
use crate::metadata::{ScramCredential, ScramMechanism};

/// Fewest iterations a credential may have (Kafka's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations a credential may have (Kafka's maximum).
pub const MAX_ITERATIONS: u32 = 16384;

fn hmac_alg(m: ScramMechanism) -> hmac::Algorithm {
    match m {
        ScramMechanism::Sha256 => hmac::HMAC_SHA256,
        ScramMechanism::Sha512 => hmac::HMAC_SHA512,
    }
}

fn hmac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac_alg(m), key), data)
        .as_ref()
        .to_vec()
}

fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    let alg = match m {
        ScramMechanism::Sha256 => &digest::SHA256,
        ScramMechanism::Sha512 => &digest::SHA512,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

/// `Hi(password, salt, iterations)`: PBKDF2 with the mechanism's HMAC.
pub fn salted_password(
    m: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let (alg, len) = match m {
        ScramMechanism::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, 32),
        ScramMechanism::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, 64),
    };
    let mut out = vec![0u8; len];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(alg, iterations, salt, password, &mut out);
    out
}

/// The credential the server keeps for a salted password.
pub fn credential(
    m: ScramMechanism,
    salted_password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = hmac(m, salted_password, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key: hash(m, &client_key),
        server_key: hmac(m, salted_password, b"Server Key"),
    }
}

/// A fresh random nonce (24 bytes, base64), for either side.
pub fn nonce() -> String {
    B64.encode(rand::random::<[u8; 24]>())
}

/// The server's final message, `v=` and its signature of `auth_message`:
/// proof that it holds the credential's server key.
fn server_final(m: ScramMechanism, server_key: &[u8], auth_message: &str) -> Vec<u8> {
    format!(
        "v={}",
        B64.encode(hmac(m, server_key, auth_message.as_bytes()))
    )
    .into_bytes()
}

fn refused(m: ScramMechanism) -> Refused {
    Refused(format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        m.name()
    ))
}

fn malformed(what: &str) -> Refused {
    Refused(format!(
        "Authentication failed: invalid SCRAM message: {what}"
    ))
}

/// `saslname` decoding: `=2C` is `,` and `=3D` is `=`; any other `=` is an
/// error.
fn decode_name(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The value of attribute `key` (`key=value`) in a comma-separated message.
fn attribute<'a>(parts: &[&'a str], key: char) -> Option<&'a str> {
    parts.iter().find_map(|p| {
        let mut chars = p.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &p[2..])
    })
}

/// A SCRAM exchange between its two rounds.
pub struct ScramServer {
    mechanism: ScramMechanism,
    user: String,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Round 1: the client's first message; `lookup` gives a user's
    /// credential for this mechanism. Returns the exchange and the
    /// server's first message.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramServer, Vec<u8>), Refused> {
        let text = std::str::from_utf8(client_first).map_err(|_| malformed("not UTF-8"))?;
        // gs2-header: a channel-binding flag, an optional authzid, then the
        // bare message.
        let mut pieces = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (pieces.next(), pieces.next(), pieces.next())
        else {
            return Err(malformed("no gs2 header"));
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(Refused(
                    "Authentication failed: SCRAM channel binding is not supported".into(),
                ))
            }
            _ => return Err(malformed("bad channel-binding flag")),
        }
        let parts: Vec<&str> = bare.split(',').collect();
        if parts.first().is_some_and(|p| p.starts_with("m=")) {
            return Err(malformed("mandatory extension"));
        }
        let user = attribute(&parts, 'n')
            .and_then(decode_name)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| malformed("no user name"))?;
        let client_nonce = attribute(&parts, 'r')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or_else(|| malformed("no nonce"))?;
        if parts.iter().any(|p| p.starts_with("tokenauth=")) {
            return Err(Refused(
                "Authentication failed: delegation tokens are not supported".into(),
            ));
        }
        if let Some(z) = authzid.strip_prefix("a=") {
            if decode_name(z).as_deref() != Some(user.as_str()) {
                return Err(Refused(
                    "Authentication failed: the authorization id differs from the user name".into(),
                ));
            }
        } else if !authzid.is_empty() {
            return Err(malformed("bad authorization id"));
        }
        let credential = lookup(&user).ok_or_else(|| refused(mechanism))?;
        let nonce = format!("{client_nonce}{}", nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            ScramServer {
                mechanism,
                user,
                credential,
                gs2_header: format!("{flag},{authzid},"),
                client_first_bare: bare.to_string(),
                server_first,
                nonce,
            },
            reply,
        ))
    }

    /// Round 2: checks the client's proof; the user name and the server's
    /// final message on success.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), Refused> {
        let m = self.mechanism;
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let parts: Vec<&str> = without_proof.split(',').collect();
        let binding = attribute(&parts, 'c').ok_or_else(|| malformed("no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(malformed("channel binding differs from the gs2 header"));
        }
        if attribute(&parts, 'r') != Some(self.nonce.as_str()) {
            return Err(malformed("nonce differs from the server's"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(m, &self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(refused(m));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let stored = hash(m, &client_key);
        if constant_time::verify_slices_are_equal(&stored, &self.credential.stored_key).is_err() {
            return Err(refused(m));
        }
        let reply = server_final(m, &self.credential.server_key, &auth_message);
        Ok((self.user, reply))
    }
}

/// The client side of an exchange, for the CLI's and the tests' checks.
pub mod client {
    use super::*;

    /// The client's first message and its bare part, with `nonce`.
    pub fn first(user: &str, nonce: &str) -> String {
        let name = user.replace('=', "=3D").replace(',', "=2C");
        format!("n,,n={name},r={nonce}")
    }

    /// The client's final message for the server's first, and the final
    /// message the server must answer; `None` when the server's message is
    /// not one.
    pub fn last(
        m: ScramMechanism,
        password: &str,
        client_first: &str,
        server_first: &str,
    ) -> Option<(String, Vec<u8>)> {
        let parts: Vec<&str> = server_first.split(',').collect();
        let nonce = attribute(&parts, 'r')?;
        let salt = B64.decode(attribute(&parts, 's')?).ok()?;
        let iterations: u32 = attribute(&parts, 'i')?.parse().ok()?;
        let salted = salted_password(m, password.as_bytes(), &salt, iterations);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let bare = client_first.strip_prefix("n,,")?;
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = hmac(m, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(m, &salted, b"Server Key");
        Some((
            format!("{without_proof},p={}", B64.encode(proof)),
            server_final(m, &server_key, &auth_message),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cred(m: ScramMechanism, password: &str) -> ScramCredential {
        let salt = b"0123456789abcdef";
        credential(
            m,
            &salted_password(m, password.as_bytes(), salt, 4096),
            salt,
            4096,
        )
    }

    fn exchange(
        m: ScramMechanism,
        user: &str,
        stored: &str,
        given: &str,
    ) -> Result<String, Refused> {
        let first = client::first(user, "clientnonce123");
        let (server, server_first) = ScramServer::start(m, first.as_bytes(), |u| {
            (u == user).then(|| cred(m, stored))
        })?;
        let server_first = String::from_utf8(server_first).expect("utf8");
        assert!(server_first.starts_with("r=clientnonce123"));
        let (last, expected) =
            client::last(m, given, &first, &server_first).expect("server first parses");
        let (name, server_final) = server.finish(last.as_bytes())?;
        assert_eq!(
            server_final, expected,
            "the server proves it knows the credential"
        );
        Ok(name)
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_fails() {
        for m in ScramMechanism::ALL {
            assert_eq!(exchange(m, "alice", "pw", "pw").as_deref(), Ok("alice"));
            assert_eq!(exchange(m, "a,b=c", "pw", "pw").as_deref(), Ok("a,b=c"));
            assert!(exchange(m, "alice", "pw", "pW").is_err());
        }
    }

    /// RFC 7677's example exchange (SCRAM-SHA-256, user "user", password
    /// "pencil"), checked against the server side with the RFC's nonces.
    #[test]
    fn rfc_7677_test_vector() {
        let m = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let c = credential(m, &salted_password(m, b"pencil", &salt, 4096), &salt, 4096);
        let client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let (mut server, _) =
            ScramServer::start(m, client_first.as_bytes(), |_| Some(c.clone())).expect("start");
        // Replay the RFC's server nonce.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (user, server_final) = server.finish(client_final.as_bytes()).expect("finish");
        assert_eq!(user, "user");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn unknown_users_malformed_messages_and_channel_binding_are_refused() {
        let m = ScramMechanism::Sha256;
        let lookup = |_: &str| Some(cred(m, "pw"));
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,r=abc",
            b"n,,n=alice",
            b"x,,n=alice,r=abc",
            b"p=tls-unique,,n=alice,r=abc",
            b"n,a=bob,n=alice,r=abc",
            b"n,,n=al=ZZice,r=abc",
            b"n,,m=ext,n=alice,r=abc",
            b"n,,n=alice,r=abc,tokenauth=true",
            b"\xff\xfe",
        ] {
            assert!(ScramServer::start(m, bad, lookup).is_err(), "{bad:?}");
        }
        assert!(ScramServer::start(m, b"n,,n=alice,r=abc", |_| None).is_err());
        let (server, _) = ScramServer::start(m, b"n,,n=alice,r=abc", lookup).expect("start");
        assert!(server.finish(b"c=biws,r=wrongnonce,p=AAAA").is_err());
    }

    proptest! {
        /// Whatever the client sends, the server answers without panicking.
        #[test]
        fn arbitrary_messages_never_panic(first in proptest::collection::vec(any::<u8>(), 0..200),
                                          last in proptest::collection::vec(any::<u8>(), 0..200)) {
            let m = ScramMechanism::Sha512;
            if let Ok((server, _)) = ScramServer::start(m, &first, |_| Some(cred(m, "pw"))) {
                let _ = server.finish(&last);
            }
        }
    }
}
