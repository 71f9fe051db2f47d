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
