//! The fuzz targets' short run in the default test command: every seed in
//! `fuzz/seeds/<target>/` and, for each target, thousands of mutations of
//! the seeds and random inputs go through the same entry points
//! (`strata::fuzzing`) that the coverage-guided `cargo fuzz` targets in
//! `fuzz/` call. A panic fails the test and names the input. The seeds are
//! written by `regenerate_seeds` (ignored; run it after changing what a
//! seed should hold).

mod common;

use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateAclsRequest, FetchRequest, JoinGroupRequest, MetadataRequest,
    ProduceRequest, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use strata::fuzzing::{self, Fixtures};

use common::raw::XorShift;

/// The broker's allocator, so that decoders reserving capacity from a
/// count read off the wire behave here as they do in the broker.
#[global_allocator]
static ALLOC: strata::alloc::GuardedAlloc = strata::alloc::GuardedAlloc;

const TARGETS: [&str; 5] = [
    "request_frame",
    "sasl_plain",
    "scram",
    "tls_handshake",
    "certificate_principal",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn run(fixtures: &Fixtures, target: &str, data: &[u8]) {
    match target {
        "request_frame" => fuzzing::request_frame(data),
        "sasl_plain" => fixtures.sasl_plain(data),
        "scram" => fuzzing::scram(data),
        "tls_handshake" => fixtures.tls_handshake(data),
        "certificate_principal" => fuzzing::certificate_principal(data),
        other => panic!("unknown target {other}"),
    }
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("entry").path();
            let data = std::fs::read(&path).expect("read seed");
            (path.display().to_string(), data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// One mutation of `seed`: flipped bytes, a cut, a duplicated stretch or
/// inserted random bytes, as a fuzzer's first mutations do.
fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let pick = |rng: &mut XorShift, n: usize| (rng.next_u64() % (n.max(1) as u64)) as usize;
    for _ in 0..=pick(rng, 4) {
        match pick(rng, 5) {
            0 if !v.is_empty() => {
                let i = pick(rng, v.len());
                v[i] ^= 1 << pick(rng, 8);
            }
            1 if !v.is_empty() => {
                let i = pick(rng, v.len());
                v[i] = [0x00, 0xff, 0x7f, 0x80][pick(rng, 4)];
            }
            2 => v.truncate(pick(rng, v.len() + 1)),
            3 if !v.is_empty() => {
                let (a, b) = (pick(rng, v.len()), pick(rng, v.len()));
                let (a, b) = (a.min(b), a.max(b));
                let stretch = v[a..b].to_vec();
                let at = pick(rng, v.len());
                v.splice(at..at, stretch);
            }
            _ => {
                let at = pick(rng, v.len() + 1);
                let n = pick(rng, 16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, bytes);
            }
        }
    }
    v
}

#[test]
fn every_target_survives_its_seeds_mutations_of_them_and_random_input() {
    let fixtures = Fixtures::shared();
    for target in TARGETS {
        let started = std::time::Instant::now();
        let seeds = seeds(target);
        for (_, data) in &seeds {
            run(fixtures, target, data);
        }
        let mut rng = XorShift::new(0x5eed ^ target.len() as u64);
        // The TLS handshake costs the most per input.
        let rounds = if target == "tls_handshake" {
            100_000
        } else {
            200_000
        };
        for i in 0..rounds {
            let input = if i % 10 == 9 {
                let n = (rng.next_u64() % 256) as usize;
                (0..n).map(|_| rng.next_u64() as u8).collect()
            } else {
                let (_, seed) = &seeds[(rng.next_u64() % seeds.len() as u64) as usize];
                mutate(&mut rng, seed)
            };
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(fixtures, target, &input)
            }));
            assert!(outcome.is_ok(), "{target} panicked on input {input:02x?}");
        }
        eprintln!("{target}: {rounds} inputs in {:?}", started.elapsed());
    }
}

/// A request frame as a client sends it (without the length prefix).
fn frame<R: Encodable>(api_key: ApiKey, version: i16, body: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.to_vec()
}

fn write_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, data) in seeds {
        std::fs::write(dir.join(name), data).expect("write seed");
    }
}

/// Writes `fuzz/seeds/`: `cargo test --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn regenerate_seeds() {
    let topic = TopicName(StrBytes::from_static_str("orders"));
    let batch = common::raw::batch(
        &[
            common::raw::record(0, Some(b"k"), Some(b"v"), 1_700_000_000_000),
            common::raw::record(1, None, Some(b"second"), 1_700_000_000_001),
        ],
        kafka_protocol::records::Compression::None,
    );
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic.clone())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    write_seeds(
        "request_frame",
        &[
            (
                "api_versions_v3",
                frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
            ),
            (
                "metadata_v12",
                frame(
                    ApiKey::Metadata,
                    12,
                    &MetadataRequest::default().with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(topic.clone())),
                    ])),
                ),
            ),
            ("produce_v9", frame(ApiKey::Produce, 9, &produce)),
            (
                "fetch_v12",
                frame(
                    ApiKey::Fetch,
                    12,
                    &FetchRequest::default().with_max_wait_ms(100),
                ),
            ),
            (
                "join_group_v5",
                frame(
                    ApiKey::JoinGroup,
                    5,
                    &JoinGroupRequest::default()
                        .with_session_timeout_ms(10_000)
                        .with_protocol_type(StrBytes::from_static_str("consumer")),
                ),
            ),
            (
                "create_acls_v3",
                frame(
                    ApiKey::CreateAcls,
                    3,
                    &CreateAclsRequest::default().with_creations(vec![AclCreation::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("orders"))
                        .with_resource_pattern_type(3)
                        .with_principal(StrBytes::from_static_str("User:alice"))
                        .with_host(StrBytes::from_static_str("*"))
                        .with_operation(3)
                        .with_permission_type(3)]),
                ),
            ),
            (
                "sasl_handshake_v1",
                frame(
                    ApiKey::SaslHandshake,
                    1,
                    &SaslHandshakeRequest::default()
                        .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
                ),
            ),
            (
                "sasl_authenticate_v2",
                frame(
                    ApiKey::SaslAuthenticate,
                    2,
                    &SaslAuthenticateRequest::default()
                        .with_auth_bytes(b"\0alice\0alice-secret".to_vec().into()),
                ),
            ),
        ],
    );
    write_seeds(
        "sasl_plain",
        &[
            ("good", b"\0alice\0alice-secret".to_vec()),
            ("authzid", b"alice\0alice\0alice-secret".to_vec()),
            ("wrong", b"\0alice\0nope".to_vec()),
        ],
    );
    let mut scram = b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL".to_vec();
    scram.put_u8(0);
    scram.extend_from_slice(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    );
    write_seeds(
        "scram",
        &[
            ("exchange", scram),
            ("first_only", b"n,,n=alice,r=abc".to_vec()),
        ],
    );
    let client_hello = {
        let config = common::pki::tls_client_config(&fuzz_dir().join("fixtures/ca.pem"));
        let mut conn = tokio_rustls::rustls::ClientConnection::new(
            config,
            "localhost".try_into().expect("name"),
        )
        .expect("client");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    };
    write_seeds(
        "tls_handshake",
        &[
            ("client_hello", client_hello),
            ("plaintext_api_versions", {
                let mut f = (frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).len()
                    as u32)
                    .to_be_bytes()
                    .to_vec();
                f.extend(frame(
                    ApiKey::ApiVersions,
                    3,
                    &ApiVersionsRequest::default(),
                ));
                f
            }),
        ],
    );
    let client = std::fs::read(fuzz_dir().join("fixtures/client.pem")).expect("client");
    write_seeds(
        "certificate_principal",
        &[(
            "client_der",
            rustls_pemfile_certs(&client)
                .next()
                .expect("a certificate")
                .to_vec(),
        )],
    );
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(
    pem: &[u8],
) -> impl Iterator<Item = tokio_rustls::rustls::pki_types::CertificateDer<'static>> + '_ {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.expect("pem"))
}
