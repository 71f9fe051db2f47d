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
    list_sizes(s3, bucket, prefix)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Every key under `prefix` with its size, through all pages of the listing.
pub fn list_sizes(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
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
                .filter_map(|o| Some((o.key()?.to_string(), o.size().unwrap_or(0).max(0) as u64))),
        );
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return keys,
        }
    }
}

/// The bytes of one object.
pub fn get_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bytes::Bytes {
    try_get_bytes(s3, bucket, key).unwrap_or_else(|| panic!("no object {key}"))
}

/// The bytes of one object, None if there is no such key.
pub fn try_get_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<bytes::Bytes> {
    // One runtime for the request and its body: the body streams on it.
    super::clients::block_on(async {
        match s3.get_object().bucket(bucket).key(key).send().await {
            Ok(out) => Some(out.body.collect().await.expect("object body").into_bytes()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!("get object {key}: {e}"),
        }
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

/// An HTTP proxy in front of the S3 endpoint that logs every request it
/// passes on (method, path with query, Range header, bytes answered): what
/// the store really received, counted independently of the broker. Requests are passed on
/// whole, headers kept (LocalStack does not check signatures against the
/// host).
pub struct CountingProxy {
    pub endpoint: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
    _rt: tokio::runtime::Runtime,
}

impl CountingProxy {
    pub fn start(upstream: &str) -> CountingProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (client, upstream, seen) = (reqwest::Client::new(), upstream.to_string(), log.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (client, upstream, seen) = (client.clone(), upstream.clone(), seen.clone());
            async move { forward(&client, &upstream, &seen, req).await }
        });
        rt.spawn(async move { axum::serve(listener, app).await });
        CountingProxy {
            endpoint,
            log,
            _rt: rt,
        }
    }

    /// Forgets what was logged so far.
    pub fn reset(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Requests logged whose method is `method` and whose path (with its
    /// query) contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.count_where(|m, p| m == method && p.contains(needle))
    }

    /// Requests logged for which `f(method, path with query)` holds.
    pub fn count_where(&self, f: impl Fn(&str, &str) -> bool) -> usize {
        self.requests_where(f).len()
    }

    /// The requests logged for which `f(method, path with query)` holds.
    pub fn requests_where(&self, f: impl Fn(&str, &str) -> bool) -> Vec<ProxiedRequest> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| f(&r.method, &r.path))
            .cloned()
            .collect()
    }
}

/// One request the proxy passed on.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    pub method: String,
    /// Path with query.
    pub path: String,
    pub range: Option<String>,
    /// Bytes of the answer's body.
    pub bytes: usize,
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    log: &std::sync::Mutex<Vec<ProxiedRequest>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let mut logged = ProxiedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        range: parts
            .headers
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        bytes: 0,
    };
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (axum::http::StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let mut out = client.request(parts.method, format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "expect"
        ) {
            out = out.header(k, v);
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut back = axum::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k.as_str() != "transfer-encoding" {
            back = back.header(k, v);
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    logged.bytes = bytes.len();
    log.lock().unwrap().push(logged);
    back.body(axum::body::Body::from(bytes))
        .unwrap_or_else(|e| (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}
