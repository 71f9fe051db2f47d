//! SASL authenticators. PLAIN (RFC 4616) checks a user name and password
//! against the users file (`--sasl-plain-users-file`, a TOML `[users]`
//! table of `name = "password"`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::config::listeners::{Mechanism, SaslSettings};

/// The SASL settings and credentials of the broker's SASL listeners.
pub struct Sasl {
    pub settings: SaslSettings,
    plain_users: ArcSwap<HashMap<String, String>>,
}

/// Why an authentication failed: the message the client gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: HashMap<String, String>,
}

fn read_users(path: &PathBuf) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the users file. sasl-plain-users-file={}",
            path.display()
        )
    })?;
    let file: UsersFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid users file (expected a [users] table of name = \"password\"): {}. sasl-plain-users-file={}",
            e.message(),
            path.display()
        )
    })?;
    Ok(file.users)
}

impl Sasl {
    pub fn load(settings: SaslSettings) -> anyhow::Result<Sasl> {
        let users = match &settings.plain_users_file {
            Some(p) => read_users(p)?,
            None => HashMap::new(),
        };
        Ok(Sasl {
            settings,
            plain_users: ArcSwap::from_pointee(users),
        })
    }

    /// Rereads the users file; on an error the previous users stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(p) = &self.settings.plain_users_file {
            self.plain_users.store(std::sync::Arc::new(read_users(p)?));
        }
        Ok(())
    }

    /// The mechanism of this name, if offered.
    pub fn mechanism(&self, name: &str) -> Option<Mechanism> {
        self.settings
            .mechanisms
            .iter()
            .copied()
            .find(|m| m.name() == name)
    }

    /// Checks a PLAIN token (`authzid NUL authcid NUL passwd`); the user
    /// name on success.
    pub fn authenticate_plain(&self, token: &[u8]) -> Result<String, Refused> {
        let mut fields = token.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(Refused(
                "Authentication failed: invalid SASL/PLAIN token".into(),
            ));
        };
        let user = std::str::from_utf8(user)
            .map_err(|_| Refused("Authentication failed: invalid SASL/PLAIN token".into()))?;
        if user.is_empty() {
            return Err(Refused("Authentication failed: empty user name".into()));
        }
        if !authzid.is_empty() && authzid != user.as_bytes() {
            return Err(Refused(
                "Authentication failed: the authorization id differs from the user name".into(),
            ));
        }
        let users = self.plain_users.load();
        // The same comparison work whether or not the user exists.
        let (known, expected) = match users.get(user) {
            Some(p) => (true, p.as_bytes()),
            None => (false, password),
        };
        if equal_in_constant_time(expected, password) && known {
            Ok(user.to_string())
        } else {
            Err(Refused(
                "Authentication failed: Invalid username or password".into(),
            ))
        }
    }
}

/// Byte-string equality whose time depends only on the lengths.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(users: &str) -> (tempfile::TempDir, Sasl) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        std::fs::write(&path, users).expect("write");
        let s = Sasl::load(SaslSettings {
            mechanisms: vec![Mechanism::Plain],
            plain_users_file: Some(path),
            failed_authentication_delay_ms: 0,
            max_reauth_ms: 0,
        })
        .expect("load");
        (dir, s)
    }

    #[test]
    fn plain_accepts_the_right_password_only() {
        let (_d, s) = sasl("[users]\nalice = \"alice-secret\"\n");
        assert_eq!(
            s.authenticate_plain(b"\0alice\0alice-secret"),
            Ok("alice".into())
        );
        assert_eq!(
            s.authenticate_plain(b"alice\0alice\0alice-secret"),
            Ok("alice".into())
        );
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0alice-secret",
            b"\0alice\0alice-secret\0",
            b"\0alice",
            b"",
            b"\0\0",
            b"bob\0alice\0alice-secret",
            b"\0\xff\0x",
        ] {
            assert!(s.authenticate_plain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reload_keeps_the_old_users_when_the_file_is_broken() {
        let (d, s) = sasl("[users]\nalice = \"one\"\n");
        let path = d.path().join("users.toml");
        std::fs::write(&path, "[users]\nalice = \"two\"\n").expect("write");
        s.reload().expect("reload");
        assert!(s.authenticate_plain(b"\0alice\0two").is_ok());
        std::fs::write(&path, "users = 3").expect("write");
        let e = s.reload().expect_err("broken file");
        assert!(e.to_string().contains("sasl-plain-users-file"), "{e}");
        assert!(s.authenticate_plain(b"\0alice\0two").is_ok());
    }

    #[test]
    fn a_missing_users_file_is_an_error_naming_the_flag() {
        let e = Sasl::load(SaslSettings {
            mechanisms: vec![Mechanism::Plain],
            plain_users_file: Some("/nonexistent/users.toml".into()),
            failed_authentication_delay_ms: 0,
            max_reauth_ms: 0,
        })
        .err()
        .expect("missing file");
        assert!(format!("{e:#}").contains("sasl-plain-users-file=/nonexistent/users.toml"));
    }
}
