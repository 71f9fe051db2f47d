//! Incomplete S3 multipart uploads: a broker killed in the middle of a
//! large upload leaves its parts in the bucket, invisible to listings and
//! billed as storage. Orphan collection lists the uploads started under a
//! partition's directory before the grace period and aborts them (the
//! `object_store` API has no listing of multipart uploads, so this uses
//! `aws-sdk-s3` with the same endpoint, region and credentials).

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio::sync::OnceCell;

use crate::store::S3Options;
use crate::TierError;

/// The S3 side of a tier on `s3://`, for what `object_store` cannot do.
pub(crate) struct S3Sweeper {
    bucket: String,
    options: S3Options,
    client: OnceCell<aws_sdk_s3::Client>,
}

impl S3Sweeper {
    pub fn new(bucket: &str, options: &S3Options) -> S3Sweeper {
        S3Sweeper {
            bucket: bucket.to_string(),
            options: options.clone(),
            client: OnceCell::new(),
        }
    }

    /// The client, built on first use from the tier's S3 settings over the
    /// standard `AWS_*` environment and credential chain.
    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| async {
                let o = &self.options;
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &o.region {
                    loader = loader.region(Region::new(region.clone()));
                } else if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    loader = loader.region(Region::new("us-east-1"));
                }
                if let (Some(id), Some(secret)) = (&o.access_key_id, &o.secret_access_key) {
                    loader = loader.credentials_provider(Credentials::new(
                        id.clone(),
                        secret.clone(),
                        o.session_token.clone(),
                        None,
                        "strata-tier",
                    ));
                }
                if let Some(endpoint) = &o.endpoint {
                    loader = loader.endpoint_url(endpoint.clone());
                }
                let shared = loader.load().await;
                let conf = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(!o.virtual_hosted_style.unwrap_or(false))
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            })
            .await
    }

    /// Aborts the multipart uploads under `prefix` started before
    /// `before_ms` (wall clock); returns how many, and how many younger
    /// ones were kept (maybe uploads in flight).
    pub async fn abort_stale(
        &self,
        prefix: &str,
        before_ms: i64,
    ) -> Result<(usize, usize), TierError> {
        let client = self.client().await;
        let fail = |op: &'static str| {
            move |e: String| TierError::S3 {
                op,
                path: prefix.to_string(),
                message: e,
            }
        };
        let (mut aborted, mut kept) = (0, 0);
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| {
                    fail("list_multipart_uploads")(
                        aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let started = u
                    .initiated()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(i64::MAX);
                if started >= before_ms {
                    kept += 1;
                    continue;
                }
                client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        fail("abort_multipart_upload")(
                            aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok((aborted, kept));
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
    }
}
