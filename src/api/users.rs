//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! SCRAM credentials in cluster metadata. The client salts the password
//! (the request carries the salt, the iteration count and the salted
//! password, never the password); the broker derives and stores the
//! stored and server keys. Each user gets its own result: a bad entry
//! refuses that user's changes, not the others'.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::Code;
use crate::broker::Broker;
use crate::metadata::{Command, ScramCredential, ScramMechanism};
use crate::security::acl::Operation;
use crate::security::scram::{self, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::security::Caller;

fn describe_result(user: &str, code: Code, message: String) -> DescribeUserScramCredentialsResult {
    DescribeUserScramCredentialsResult::default()
        .with_user(StrBytes::from_string(user.to_string()))
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

pub fn describe(
    broker: &Broker,
    req: DescribeUserScramCredentialsRequest,
    caller: &Caller,
) -> DescribeUserScramCredentialsResponse {
    if let Some(why) = caller.cluster_refusal(Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(Code::ClusterAuthorizationFailed.code())
            .with_error_message(Some(StrBytes::from_string(why)));
    }
    let view = broker.view();
    let found = |user: &str, creds: &BTreeMap<ScramMechanism, ScramCredential>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_credential_infos(
                creds
                    .iter()
                    .map(|(m, c)| {
                        CredentialInfo::default()
                            .with_mechanism(m.code())
                            .with_iterations(i32::try_from(c.iterations).unwrap_or(i32::MAX))
                    })
                    .collect(),
            )
    };
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => view
            .scram
            .iter()
            .map(|(user, creds)| found(user, creds))
            .collect(),
        Some(users) => {
            let mut seen = BTreeMap::new();
            for u in &users {
                *seen.entry(u.name.to_string()).or_insert(0) += 1;
            }
            seen.into_iter()
                .map(|(user, n)| {
                    if n > 1 {
                        return describe_result(
                            &user,
                            Code::DuplicateResource,
                            format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}"),
                        );
                    }
                    match view.scram.get(&user) {
                        Some(creds) => found(&user, creds),
                        None => describe_result(
                            &user,
                            Code::ResourceNotFound,
                            format!("Attempt to describe a user credential that does not exist: {user}"),
                        ),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// Why one user's changes are refused.
type Refusal = (Code, String);

pub async fn alter(
    broker: &Broker,
    req: AlterUserScramCredentialsRequest,
    caller: &Caller,
) -> AlterUserScramCredentialsResponse {
    let view = broker.view();
    let mut refused: BTreeMap<String, Refusal> = BTreeMap::new();
    let denied = caller.cluster_refusal(Operation::Alter);
    let mut users: Vec<String> = Vec::new();
    let mut pairs = BTreeMap::new();
    let mut note = |user: &str, mechanism: i8| {
        if !users.iter().any(|u| u == user) {
            users.push(user.to_string());
        }
        *pairs.entry((user.to_string(), mechanism)).or_insert(0) += 1;
    };
    for d in &req.deletions {
        note(&d.name, d.mechanism);
    }
    for u in &req.upsertions {
        note(&u.name, u.mechanism);
    }
    if let Some(why) = denied {
        for user in &users {
            refused.insert(
                user.clone(),
                (Code::ClusterAuthorizationFailed, why.clone()),
            );
        }
    }
    for ((user, _), n) in &pairs {
        if *n > 1 {
            refused.entry(user.clone()).or_insert((
                Code::DuplicateResource,
                format!("A user credential cannot be altered twice in the same request: {user}"),
            ));
        }
    }
    let mut deletions = Vec::new();
    for d in &req.deletions {
        let user = d.name.to_string();
        let check = || -> Result<(String, ScramMechanism), Refusal> {
            if user.is_empty() {
                return Err((
                    Code::UnacceptableCredential,
                    "Username must not be empty".into(),
                ));
            }
            let m = ScramMechanism::from_code(d.mechanism).ok_or_else(|| {
                (
                    Code::UnsupportedSaslMechanism,
                    format!("Unknown SCRAM mechanism: {}", d.mechanism),
                )
            })?;
            if !view.scram.get(&user).is_some_and(|c| c.contains_key(&m)) {
                return Err((
                    Code::ResourceNotFound,
                    format!(
                        "Attempt to delete a user credential that does not exist: {user} {}",
                        m.name()
                    ),
                ));
            }
            Ok((user.clone(), m))
        };
        match check() {
            Ok(d) => deletions.push(d),
            Err(r) => {
                refused.entry(user.clone()).or_insert(r);
            }
        }
    }
    let mut upserts = Vec::new();
    for u in &req.upsertions {
        let user = u.name.to_string();
        let check = || -> Result<(String, ScramMechanism, ScramCredential), Refusal> {
            if user.is_empty() {
                return Err((
                    Code::UnacceptableCredential,
                    "Username must not be empty".into(),
                ));
            }
            let m = ScramMechanism::from_code(u.mechanism).ok_or_else(|| {
                (
                    Code::UnsupportedSaslMechanism,
                    format!("Unknown SCRAM mechanism: {}", u.mechanism),
                )
            })?;
            let iterations = u32::try_from(u.iterations).unwrap_or(0);
            if iterations < MIN_ITERATIONS {
                return Err((
                    Code::UnacceptableCredential,
                    format!(
                        "Too few iterations: {} (at least {MIN_ITERATIONS})",
                        u.iterations
                    ),
                ));
            }
            if iterations > MAX_ITERATIONS {
                return Err((
                    Code::UnacceptableCredential,
                    format!(
                        "Too many iterations: {} (at most {MAX_ITERATIONS})",
                        u.iterations
                    ),
                ));
            }
            let hash_len = match m {
                ScramMechanism::Sha256 => 32,
                ScramMechanism::Sha512 => 64,
            };
            if u.salt.is_empty() || u.salted_password.len() != hash_len {
                return Err((
                    Code::UnacceptableCredential,
                    format!(
                        "A {} credential needs a salt and a salted password of {hash_len} bytes",
                        m.name()
                    ),
                ));
            }
            let credential = scram::credential(m, &u.salted_password, &u.salt, iterations);
            Ok((user.clone(), m, credential))
        };
        match check() {
            Ok(c) => upserts.push(c),
            Err(r) => {
                refused.entry(user.clone()).or_insert(r);
            }
        }
    }
    deletions.retain(|(u, _)| !refused.contains_key(u));
    upserts.retain(|(u, _, _)| !refused.contains_key(u));
    let changed: BTreeSet<String> = deletions
        .iter()
        .map(|(u, _)| u.clone())
        .chain(upserts.iter().map(|(u, _, _)| u.clone()))
        .collect();
    if !changed.is_empty() {
        if let Err(e) = broker
            .metadata
            .propose(Command::AlterScramCredentials { upserts, deletions })
            .await
        {
            for user in &changed {
                refused.insert(user.clone(), (Code::NotController, e.to_string()));
            }
        } else {
            tracing::info!(users = ?changed, "SCRAM credentials changed");
        }
    }
    let results = users
        .into_iter()
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default()
                .with_user(StrBytes::from_string(user.clone()));
            match refused.remove(&user) {
                Some((code, message)) => r
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
                None => r,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
