//! One TCP connection to one broker: length-prefixed frames, correlation
//! ids, many requests in flight, and the ApiVersions handshake.
//!
//! A writer task owns the write half and a reader task the read half, so a
//! request future can be dropped at any point without leaving half a frame
//! on the wire; its late response is simply discarded. When either task
//! stops, every waiting request fails with `Disconnected` and the connection
//! reports itself closed, so the [`Client`](super::Client) opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::ClientError;
use super::versions::ApiVersionTable;

/// Largest response frame accepted (a fetch answers at most its max_bytes).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// The UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// Settings shared by every connection of a client.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub security: super::Security,
}

type Waiters = HashMap<i32, oneshot::Sender<Bytes>>;

/// What the writer task is handed.
enum Outgoing {
    Frame(Bytes),
    /// Answered once every earlier frame has been written.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Pending {
    waiters: Waiters,
    closed: bool,
}

/// A connected, handshaken broker connection.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    request_timeout: Duration,
    versions: ApiVersionTable,
    frames: mpsc::UnboundedSender<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    next_correlation_id: AtomicI32,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connect to `addr` and negotiate API versions.
    pub async fn open(addr: &str, opts: &ConnOptions) -> Result<Connection, ClientError> {
        let stream =
            match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(ClientError::Connect {
                        addr: addr.to_owned(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(ClientError::Connect {
                        addr: addr.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                    })
                }
            };
        let _ = stream.set_nodelay(true);
        type Half<T> = Box<T>;
        let (rd, mut wr): (
            Half<dyn tokio::io::AsyncRead + Send + Unpin>,
            Half<dyn tokio::io::AsyncWrite + Send + Unpin>,
        ) = match &opts.security.tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                        ClientError::Tls {
                            addr: addr.to_owned(),
                            source: std::io::Error::other(e),
                        }
                    })?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = match tokio::time::timeout(
                    opts.connect_timeout,
                    connector.connect(name, stream),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(source)) => {
                        return Err(ClientError::Tls {
                            addr: addr.to_owned(),
                            source,
                        })
                    }
                    Err(_) => {
                        return Err(ClientError::Tls {
                            addr: addr.to_owned(),
                            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                        })
                    }
                };
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        let mut rd = tokio::io::BufReader::with_capacity(64 * 1024, rd);
        let pending = Arc::new(Mutex::new(Pending::default()));

        let (frames, mut frames_rx) = mpsc::unbounded_channel::<Outgoing>();
        let writer_pending = Arc::clone(&pending);
        let writer = tokio::spawn(async move {
            while let Some(out) = frames_rx.recv().await {
                match out {
                    Outgoing::Frame(frame) => {
                        if wr.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                    Outgoing::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
            close(&writer_pending);
        });

        let reader_pending = Arc::clone(&pending);
        let reader = tokio::spawn(async move {
            while let Ok(len) = rd.read_i32().await {
                let Ok(len) = usize::try_from(len) else { break };
                if !(4..=MAX_RESPONSE_BYTES).contains(&len) {
                    break;
                }
                let mut buf = BytesMut::zeroed(len);
                if rd.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let frame = buf.freeze();
                let correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let waiter = lock(&reader_pending).waiters.remove(&correlation_id);
                if let Some(tx) = waiter {
                    let _ = tx.send(frame);
                }
            }
            close(&reader_pending);
        });

        let mut conn = Connection {
            addr: addr.to_owned(),
            client_id: StrBytes::from_string(opts.client_id.clone()),
            request_timeout: opts.request_timeout,
            versions: ApiVersionTable::default(),
            frames,
            pending,
            next_correlation_id: AtomicI32::new(0),
            reader,
            writer,
        };
        conn.versions = conn.handshake().await?;
        if let Some(login) = &opts.security.sasl {
            conn.authenticate(login).await?;
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.pending).closed
    }

    /// What the broker advertised.
    pub fn versions(&self) -> &ApiVersionTable {
        &self.versions
    }

    /// The negotiated version of request type `R`.
    pub fn version<R: Request>(&self) -> Result<i16, ClientError> {
        self.versions
            .pick_for::<R>()
            .ok_or_else(|| ClientError::UnsupportedApi {
                api: api_key::<R>(),
                addr: self.addr.clone(),
            })
    }

    /// Send `req` at the negotiated version with the default timeout.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response, ClientError> {
        let version = self.version::<R>()?;
        self.send_version(req, version, self.request_timeout).await
    }

    /// Send `req` at `version`, waiting at most `timeout` for the answer.
    pub async fn send_version<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let frame = self.roundtrip(req, version, timeout).await?;
        self.decode::<R>(frame, version)
    }

    /// Send `req` for which the broker sends no answer (Produce with
    /// acks=0); returns once it is written to the socket.
    pub async fn send_no_response<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        let correlation_id = self.next_id();
        let frame = self.encode(req, version, correlation_id)?;
        let (done, written) = oneshot::channel();
        self.frames
            .send(Outgoing::Frame(frame))
            .and_then(|()| self.frames.send(Outgoing::Flush(done)))
            .map_err(|_| self.disconnected())?;
        match tokio::time::timeout(self.request_timeout, written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.disconnected()),
            Err(_) => Err(ClientError::Timeout {
                api: api_key::<R>(),
                addr: self.addr.clone(),
                after: self.request_timeout,
            }),
        }
    }

    fn next_id(&self) -> i32 {
        self.next_correlation_id.fetch_add(1, Ordering::Relaxed)
    }

    fn encode<R: Request>(
        &self,
        req: &R,
        version: i16,
        correlation_id: i32,
    ) -> Result<Bytes, ClientError> {
        let api = api_key::<R>();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .and_then(|()| req.encode(&mut buf, version))
            .map_err(|e| ClientError::Encode {
                api,
                version,
                source: e.into(),
            })?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| {
            ClientError::InvalidArgument(format!(
                "request too large. api={api:?}, bytes={}",
                buf.len()
            ))
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }

    /// Send one request and return its response frame (correlation id first).
    async fn roundtrip<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let api = api_key::<R>();
        let correlation_id = self.next_id();
        let frame = self.encode(req, version, correlation_id)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if p.closed {
                return Err(self.disconnected());
            }
            p.waiters.insert(correlation_id, tx);
        }
        // Removes the waiter however this future ends (timeout, drop).
        let _guard = WaiterGuard {
            pending: &self.pending,
            correlation_id,
        };
        if self.frames.send(Outgoing::Frame(frame)).is_err() {
            return Err(self.disconnected());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(self.disconnected()),
            Err(_) => Err(ClientError::Timeout {
                api,
                addr: self.addr.clone(),
                after: timeout,
            }),
        }
    }

    fn decode<R: Request>(&self, frame: Bytes, version: i16) -> Result<R::Response, ClientError> {
        let api = api_key::<R>();
        let mut buf = frame;
        ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .and_then(|_| R::Response::decode(&mut buf, version))
            .map_err(|e| ClientError::Decode {
                api,
                version,
                addr: self.addr.clone(),
                source: e.into(),
            })
    }

    fn disconnected(&self) -> ClientError {
        ClientError::Disconnected {
            addr: self.addr.clone(),
        }
    }

    /// SaslHandshake, then SaslAuthenticate: one round for PLAIN, two for
    /// SCRAM (whose final answer must prove the broker knows the
    /// credential).
    async fn authenticate(&self, login: &super::SaslLogin) -> Result<(), ClientError> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let refused = |message: String| ClientError::Authentication {
            addr: self.addr.clone(),
            message,
        };
        let hs = self
            .send(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_string(login.mechanism.clone())),
            )
            .await?;
        if hs.error_code != 0 {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "the broker does not offer {} (it offers {})",
                login.mechanism,
                offered.join(", ")
            )));
        }
        let round = |bytes: Vec<u8>| async move {
            let r = self
                .send(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)))
                .await?;
            if r.error_code != 0 {
                return Err(refused(
                    r.error_message
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("error code {}", r.error_code)),
                ));
            }
            Ok(r.auth_bytes)
        };
        let scram = crate::metadata::ScramMechanism::from_name(&login.mechanism);
        match scram {
            None => {
                round(format!("\0{}\0{}", login.username, login.password).into_bytes()).await?;
            }
            Some(m) => {
                use crate::security::scram::{client, nonce};
                let nonce = nonce();
                let first = client::first(&login.username, &nonce);
                let server_first = round(first.clone().into_bytes()).await?;
                let server_first = String::from_utf8_lossy(&server_first).into_owned();
                if !server_first.starts_with(&format!("r={nonce}")) {
                    return Err(refused(
                        "the broker's SCRAM nonce does not extend ours".into(),
                    ));
                }
                let (last, expected) = client::last(m, &login.password, &first, &server_first)
                    .ok_or_else(|| refused("malformed SCRAM message from the broker".into()))?;
                let server_final = round(last.into_bytes()).await?;
                if server_final.as_ref() != expected.as_slice() {
                    return Err(refused(
                        "the broker's SCRAM signature is wrong: it does not know the credential"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// ApiVersions at the highest version the codec knows; on
    /// UNSUPPORTED_VERSION (answered in the v0 layout, KIP-511) retry once
    /// with the highest version the broker named.
    async fn handshake(&self) -> Result<ApiVersionTable, ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strata"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max;
        for _attempt in 0..2 {
            let frame = self.roundtrip(&req, version, self.request_timeout).await?;
            // Header v0 (correlation id only) for every ApiVersions version.
            let error_code = frame.get(4..6).map(|b| i16::from_be_bytes([b[0], b[1]]));
            if error_code == Some(UNSUPPORTED_VERSION) {
                let resp = self.decode::<ApiVersionsRequest>(frame, 0)?;
                let table = ApiVersionTable::from_response(&resp);
                match table.pick_for::<ApiVersionsRequest>() {
                    Some(v) if v < version => {
                        version = v;
                        continue;
                    }
                    _ => {
                        return Err(ClientError::UnsupportedApi {
                            api: ApiKey::ApiVersions,
                            addr: self.addr.clone(),
                        })
                    }
                }
            }
            let resp: ApiVersionsResponse = self.decode::<ApiVersionsRequest>(frame, version)?;
            super::error::check(
                resp.error_code,
                "api versions",
                || format!("broker={}", self.addr),
                None,
            )?;
            return Ok(ApiVersionTable::from_response(&resp));
        }
        Err(ClientError::UnsupportedApi {
            api: ApiKey::ApiVersions,
            addr: self.addr.clone(),
        })
    }
}

struct WaiterGuard<'a> {
    pending: &'a Mutex<Pending>,
    correlation_id: i32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiters.remove(&self.correlation_id);
    }
}

/// The API key of a request type.
pub fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("every kafka-protocol request type has a known api key")
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A panic while holding this lock cannot leave the map inconsistent.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mark closed and fail every waiter (dropping its sender).
fn close(p: &Mutex<Pending>) {
    let mut p = lock(p);
    p.closed = true;
    p.waiters.clear();
}
