//! LocalStack S3 for the tests that need it (the test command starts it and
//! sets `STRATA_TEST_S3_ENDPOINT`).

/// The LocalStack endpoint, or a clear failure (no silent skip).
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("STRATA_TEST_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ if std::env::var("STRATA_SKIP_S3").as_deref() == Ok("1") => None,
        _ => panic!(
            "STRATA_TEST_S3_ENDPOINT is not set: run the suite with `bash tests/run.sh` \
             (it starts LocalStack), or set STRATA_SKIP_S3=1 to skip S3 tests explicitly"
        ),
    }
}

pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "strata-tests");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// `b` tiering to `s3://<bucket>/strata` on the LocalStack at `endpoint`,
/// with LocalStack's credentials.
pub fn tiered_to(b: super::BrokerBuilder, endpoint: &str, bucket: &str) -> super::BrokerBuilder {
    b.arg("--tier-url")
        .arg(format!("s3://{bucket}/strata"))
        .arg("--tier-s3-endpoint")
        .arg(endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
}

/// A new bucket with a unique name.
pub fn new_bucket(s3: &aws_sdk_s3::Client) -> String {
    let bucket = format!("strata-it-{}", uuid::Uuid::new_v4().simple());
    super::clients::block_on(s3.create_bucket().bucket(&bucket).send()).expect("create bucket");
    bucket
}

/// Every key under `prefix`, through all pages of the listing.
pub fn list_keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = super::clients::block_on(
            s3.list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send(),
        )
        .expect("list bucket");
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return keys,
        }
    }
}

/// The bytes of one object.
pub fn get_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bytes::Bytes {
    // One runtime for the request and its body: the body streams on it.
    super::clients::block_on(async {
        let out = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("get object");
        out.body.collect().await.expect("object body").into_bytes()
    })
}

/// The server-side encryption S3 reports for an object, and its KMS key.
pub fn object_encryption(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> (Option<String>, Option<String>) {
    let out = super::clients::block_on(s3.head_object().bucket(bucket).key(key).send())
        .expect("head object");
    (
        out.server_side_encryption().map(|e| e.as_str().to_string()),
        out.ssekms_key_id().map(str::to_string),
    )
}
