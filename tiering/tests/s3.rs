//! The tier against S3 (LocalStack): uploads, reads, fencing by conditional
//! PUT, crash leftovers, retention and restore, with the bucket inspected
//! through aws-sdk-s3, independently of object_store.
//!
//! Needs `STRATA_TEST_S3_ENDPOINT` (e.g. from `localstack/start.sh`). Without
//! it every test here FAILS, unless `STRATA_SKIP_S3=1` says to skip them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use common::*;
use object_store::ObjectStore;
use tiering::faults::{FaultConfig, FaultyStore};
use tiering::{
    ConditionalPut, ObjectKind, RetentionPolicy, S3Options, TierError, TierOptions, TierStore,
};

const REGION: &str = "us-east-1";

/// The endpoint, or `None` when S3 tests are explicitly skipped.
fn endpoint() -> Option<String> {
    match std::env::var("STRATA_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            if std::env::var("STRATA_SKIP_S3").as_deref() == Ok("1") {
                eprintln!("S3 tests skipped: STRATA_SKIP_S3=1");
                None
            } else {
                panic!(
                    "STRATA_TEST_S3_ENDPOINT is not set: start LocalStack with \
                     `localstack/start.sh` and export the line it prints, or set \
                     STRATA_SKIP_S3=1 to skip the S3 tests deliberately"
                );
            }
        }
    }
}

async fn sdk(endpoint: &str) -> Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "strata-tests",
        ))
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

async fn new_bucket(client: &Client) -> String {
    let name = format!(
        "strata-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

fn s3_options(endpoint: &str) -> TierOptions {
    TierOptions {
        s3: S3Options {
            endpoint: Some(endpoint.to_string()),
            region: Some(REGION.into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            session_token: None,
            allow_http: Some(true),
            virtual_hosted_style: Some(false),
            sse: None,
        },
        ..small_options()
    }
}

/// The same bucket and prefix as a raw object_store client, for wrapping.
fn raw_store(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .build()
            .expect("s3 store"),
    )
}

async fn keys(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        out.extend(
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match r.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    out.sort();
    out
}

async fn object(client: &Client, bucket: &str, key: &str) -> (Vec<u8>, Option<String>) {
    let r = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get object");
    let etag = r.e_tag().map(str::to_string);
    let body = r.body.collect().await.expect("body").into_bytes().to_vec();
    (body, etag)
}

#[tokio::test]
async fn s3_upload_read_back_and_inspect_the_bucket() {
    let Some(ep) = endpoint() else { return };
    let client = sdk(&ep).await;
    let bucket = new_bucket(&client).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let url = format!("s3://{bucket}/tier/prefix");
    let tier = TierStore::from_url_with(&url, s3_options(&ep)).expect("tier");
    tier.probe("s3-test").await.expect("probe");
    let part = tier.partition(key("orders", 4));
    upload_all(&part, &segs, 1).await;
    check_reads(&part, &segs).await;
    let replayed = replay(&part, 0, 300_000).await.expect("replay");
    assert!(replayed == all_logs(&segs));

    // What really landed, seen by another client.
    let dir_key = part.dir();
    assert!(
        dir_key.starts_with(&format!("tier/prefix/{CLUSTER}/orders-")),
        "{dir_key}"
    );
    assert!(dir_key.ends_with("/4"));
    let listed = keys(&client, &bucket, &format!("{dir_key}/")).await;
    let (manifest_body, _) = object(&client, &bucket, &format!("{dir_key}/manifest.json")).await;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_body).expect("json");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["partition"], 4);
    let mut named = vec![format!("{dir_key}/manifest.json")];
    let m = part.manifest().await.expect("manifest");
    for (meta, seg) in m.segments.iter().zip(&segs) {
        for o in meta.objects.values() {
            named.push(format!("{dir_key}/{}", o.name));
        }
        let log = meta.object(ObjectKind::Log).expect("log");
        let (body, etag) = object(&client, &bucket, &format!("{dir_key}/{}", log.name)).await;
        assert!(body == seg.log, "log object differs from the segment file");
        assert_eq!(crc32c::crc32c(&body), log.crc32c);
        if seg.log.len() as u64 >= small_options().multipart_threshold {
            // S3 marks multipart objects' e-tags with a part count.
            let etag = etag.expect("etag");
            assert!(etag.contains('-'), "multipart etag expected: {etag}");
        }
    }
    named.sort();
    assert_eq!(listed, named, "bucket holds exactly the named objects");
    // The probe object is gone.
    assert!(keys(&client, &bucket, "tier/prefix/_probe")
        .await
        .is_empty());
}

#[tokio::test]
async fn s3_deposed_leader_is_fenced_by_conditional_put() {
    let Some(ep) = endpoint() else { return };
    let client = sdk(&ep).await;
    let bucket = new_bucket(&client).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let url = format!("s3://{bucket}");
    let a = TierStore::from_url_with(&url, s3_options(&ep))
        .expect("a")
        .partition(key("t", 0));
    let b = TierStore::from_url_with(&url, s3_options(&ep))
        .expect("b")
        .partition(key("t", 0));
    upload_all(&a, &segs[..1], 5).await;
    b.manifest().await.expect("b loads");
    upload_all(&b, &segs[1..2], 6).await;
    let e = a
        .upload_segment(&segs[2].upload(5))
        .await
        .expect_err("fenced");
    assert!(
        matches!(
            e,
            TierError::Fenced {
                manifest_epoch: 6,
                ..
            }
        ),
        "{e}"
    );
    let (body, _) = object(&client, &bucket, &format!("{}/manifest.json", a.dir())).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["leader_epoch"], 6);
    assert_eq!(v["segments"].as_array().map(Vec::len), Some(2));
    // Same-epoch writers with stale copies: the conditional PUT makes the
    // loser re-read, so no segment is lost.
    let c = TierStore::from_url_with(&url, s3_options(&ep))
        .expect("c")
        .partition(key("t", 0));
    c.manifest().await.expect("c loads");
    upload_all(&b, &segs[2..], 6).await;
    let seg4 = tiering::testkit::TestSegment::write(
        &dir.path().join("d"),
        segs[2].last_offset + 1,
        5,
        2,
        10,
        9_000_000,
    )
    .expect("seg d");
    upload_all(&c, std::slice::from_ref(&seg4), 6).await;
    let m = c.refresh().await.expect("manifest");
    assert_eq!(m.segments.len(), 4);
}

#[tokio::test]
async fn s3_crash_leftovers_retention_and_restore() {
    let Some(ep) = endpoint() else { return };
    let client = sdk(&ep).await;
    let bucket = new_bucket(&client).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let faulty = Arc::new(FaultyStore::new(
        raw_store(&ep, &bucket),
        FaultConfig {
            fail_puts_containing: Some("manifest.json".into()),
            ..FaultConfig::default()
        },
    ));
    faulty.set_enabled(false);
    let tier =
        TierStore::from_object_store(faulty.clone(), "", ConditionalPut::Native, small_options())
            .expect("tier");
    let part = tier.partition(key("events", 0));
    upload_all(&part, &segs[..2], 1).await;
    faulty.set_enabled(true);
    part.upload_segment(&segs[2].upload(1))
        .await
        .expect_err("crash before manifest");
    faulty.set_enabled(false);
    let before = keys(&client, &bucket, &format!("{}/", part.dir())).await;
    let r = part
        .collect_orphans(Duration::from_secs(3600), now_ms() + 2 * 3600 * 1000)
        .await
        .expect("gc");
    assert!(r.deleted >= 4, "{r:?}");
    let after = keys(&client, &bucket, &format!("{}/", part.dir())).await;
    assert_eq!(before.len() - after.len(), r.deleted);
    assert!(after
        .iter()
        .all(|k| !k.contains(&format!("{:020}-", segs[2].base_offset))));

    // Retention: segment a expires; the manifest moves first, then objects go.
    let out = part
        .apply_retention(
            RetentionPolicy {
                retention_ms: 1_000,
                retention_bytes: -1,
                local_only_bytes: 0,
            },
            1_500_000,
            1,
        )
        .await
        .expect("retention");
    assert_eq!(out.segments_removed, 1);
    assert_eq!(out.objects_left, 0);
    let left = keys(&client, &bucket, &format!("{}/", part.dir())).await;
    assert!(left
        .iter()
        .all(|k| !k.contains(&format!("/{:020}-", segs[0].base_offset))));

    // Restore: a new broker with nothing but the bucket.
    let url = format!("s3://{bucket}");
    let fresh = TierStore::from_url_with(&url, s3_options(&ep)).expect("tier");
    let topics = fresh
        .list_remote_topics(CLUSTER)
        .await
        .expect("list topics");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].topic, "events");
    assert_eq!(topics[0].partitions, vec![0]);
    let restored = fresh.partition(key("events", 0));
    assert_eq!(
        restored.log_start_offset().await.expect("start"),
        Some(segs[1].base_offset)
    );
    check_reads(&restored, &segs[1..2]).await;
}

/// A multipart upload a crash left incomplete (parts uploaded, never
/// completed or aborted) is aborted by orphan collection once older than
/// the grace period; a young one is kept.
#[tokio::test]
async fn s3_orphan_collection_aborts_stale_multipart_uploads() {
    let Some(endpoint) = endpoint() else { return };
    let client = sdk(&endpoint).await;
    let bucket = new_bucket(&client).await;
    let tier = TierStore::from_url_with(&format!("s3://{bucket}/pfx"), s3_options(&endpoint))
        .expect("tier");
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let part = tier.partition(key("orders", 0));
    upload_all(&part, &segs[..1], 1).await;
    let key = format!("{}/00000000000000000200-cut.log", part.dir());
    let started = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("start multipart");
    let id = started.upload_id().expect("upload id").to_string();
    client
        .upload_part()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&id)
        .part_number(1)
        .body(aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 5 << 20]))
        .send()
        .await
        .expect("upload part");
    let pending = |client: Client, bucket: String| async move {
        client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .expect("list uploads")
            .uploads()
            .len()
    };
    assert_eq!(pending(client.clone(), bucket.clone()).await, 1);
    let grace = Duration::from_secs(3600);
    let young = part.collect_orphans(grace, now_ms()).await.expect("gc");
    assert_eq!(young.deleted, 0);
    assert!(young.kept_young >= 1);
    assert_eq!(pending(client.clone(), bucket.clone()).await, 1);
    let later = part
        .collect_orphans(grace, now_ms() + 2 * 3600 * 1000)
        .await
        .expect("gc");
    assert!(later.deleted >= 1, "{later:?}");
    assert_eq!(pending(client.clone(), bucket.clone()).await, 0);
    check_reads(&part, &segs[..1]).await;
}

/// The scrub on LocalStack: a flipped byte, a truncated object and a
/// deleted one, each made through another client, are found and named;
/// re-uploads from the local files make the next scrub clean, and the
/// damaged bytes are never served.
#[tokio::test]
async fn s3_scrub_finds_damage_made_in_the_bucket() {
    let Some(ep) = endpoint() else { return };
    let client = sdk(&ep).await;
    let bucket = new_bucket(&client).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = three_segments(dir.path());
    let url = format!("s3://{bucket}/tier");
    let tier = TierStore::from_url_with(&url, s3_options(&ep)).expect("tier");
    let part = tier.partition(key("scrubbed", 0));
    upload_all(&part, &segs, 1).await;
    let limit = tiering::RateLimiter::unlimited();
    let cancel = tokio_util::sync::CancellationToken::new();
    assert!(part
        .scrub(&limit, &cancel)
        .await
        .expect("scrub")
        .problems
        .is_empty());

    let m = part.manifest().await.expect("manifest");
    let key_of = |seg: usize, kind: ObjectKind| {
        format!(
            "{}/{}",
            part.dir(),
            m.segments[seg].object(kind).expect("object").name
        )
    };
    let (mut log_b, _) = object(&client, &bucket, &key_of(1, ObjectKind::Log)).await;
    let (_, pos, _) = segs[1].batches[7];
    log_b[pos as usize + 70] ^= 0x08;
    let put = |key: String, body: Vec<u8>| {
        let client = client.clone();
        let bucket = bucket.clone();
        async move {
            client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(body.into())
                .send()
                .await
                .expect("put")
        }
    };
    put(key_of(1, ObjectKind::Log), log_b).await;
    let (mut idx_c, _) = object(&client, &bucket, &key_of(2, ObjectKind::Index)).await;
    idx_c.truncate(idx_c.len() / 2);
    put(key_of(2, ObjectKind::Index), idx_c).await;
    client
        .delete_object()
        .bucket(&bucket)
        .key(key_of(0, ObjectKind::Timeindex))
        .send()
        .await
        .expect("delete");

    let found = part.scrub(&limit, &cancel).await.expect("scrub");
    let mut named: Vec<(i64, String)> = found
        .problems
        .iter()
        .map(|p| (p.base_offset, p.object.clone()))
        .collect();
    named.sort();
    let want = |seg: usize, kind: ObjectKind| {
        (
            segs[seg].base_offset,
            m.segments[seg].object(kind).expect("object").name.clone(),
        )
    };
    assert_eq!(
        named,
        vec![
            want(0, ObjectKind::Timeindex),
            want(1, ObjectKind::Log),
            want(2, ObjectKind::Index)
        ],
        "{found:?}"
    );
    // Never the damaged bytes.
    let (victim, _, _) = segs[1].batches[7];
    assert!(part.read(victim, 1).await.is_err());

    for s in &segs {
        part.reupload_segment(&s.upload(1), &cancel, &limit)
            .await
            .expect("re-upload");
    }
    assert!(part
        .scrub(&limit, &cancel)
        .await
        .expect("scrub")
        .problems
        .is_empty());
    assert_eq!(
        part.read(victim, 1).await.expect("read"),
        segs[1].expected_read(victim, 1)
    );
}
