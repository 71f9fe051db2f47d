//! Listeners and the connection loop.
//!
//! Overview: [`run`] accepts connections on the Kafka listener until the
//! shutdown token fires. Each connection reads 4-byte length-prefixed frames;
//! a frame above `socket.request.max.bytes` closes the connection with a log
//! line. Requests are handled one at a time in arrival order, so pipelined
//! produce requests append in order; the waiting parts (acks=all
//! durability, fetch long-polls) run concurrently, so they do not hold up
//! the requests pipelined behind them. A writer task sends the responses in
//! request order (Kafka's guarantee), fetched record data with sendfile; the
//! reader yields to it before each read of the socket, so responses go out
//! while more requests are being read.
//!
//! Backpressure: request bytes in flight are bounded per connection and per
//! broker ([`RequestBytes`]); the reader waits for room before reading a
//! frame's body (beyond what its 64 KiB read buffer already holds) and the
//! room is given back when its response is written. Room is taken whole or
//! not at all, and not in arrival order, so a big request waiting for room
//! never holds up a small one behind it.
//!
//! Hostile or broken clients: a body must arrive within
//! `--request-body-timeout-ms` of its length prefix; a connection with no
//! request for `--connections-max-idle-ms` and none in flight is closed;
//! `--max-connections` and `--max-connections-per-ip` cap connections (more
//! are closed on accept). Log lines a client can cause are rate-limited.
//!
//! Consistency: responses leave in the order requests arrived; requests that
//! get no response (`acks=0` produce) still take their turn.
//!
//! Cancellation: on shutdown, connections stop reading; handlers in flight
//! finish (bounded by their own timeouts) before the writer ends.
//!
//! Security: each listener has a security protocol (`security`). A TLS
//! listener completes the handshake within `--request-body-timeout-ms`
//! before reading requests; on TLS connections file ranges cannot go out
//! with sendfile (the kernel would send them unencrypted), so they are read
//! into one reused buffer per connection and written through the TLS
//! stream. A SASL listener's connections read frames of at most
//! [`crate::security::UNAUTHENTICATED_MAX_FRAME`] until they authenticate.

pub mod admin;
pub mod frame;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::broker::Broker;
use crate::config::listeners::SecurityProtocol;
use crate::security::{Listener, Session};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::LogLimiter;
use crate::zerocopy::{self, Part};

/// How many requests of one connection may be in flight at once; the reader
/// stops reading when the writer is this far behind (backpressure).
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1024;

/// Read buffer of a connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Binds the Kafka listener on `addr`. With `congestion` (e.g. `cubic`) the
/// listening socket gets that TCP congestion control, which the connections
/// it accepts inherit; an algorithm the kernel does not offer is an error
/// naming it and the ones it does.
pub fn bind_kafka(
    addr: std::net::SocketAddr,
    congestion: Option<&str>,
) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // What tokio's own bind does: rebinding a port with connections in
    // TIME_WAIT is fine for a listener.
    socket.set_reuse_address(true)?;
    if let Some(name) = congestion {
        socket.set_tcp_congestion(name.as_bytes()).map_err(|e| {
            let offered =
                std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                    .unwrap_or_default();
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot set tcp-congestion-control={name}: {e}; this kernel offers: {}",
                    offered.trim()
                ),
            )
        })?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Bounds on request bytes in flight (read, not yet answered): per broker
/// (`queued.max.request.bytes`) and per connection. A connection that would
/// exceed either stops reading, before the frame body, until earlier
/// responses are written, so a fast client slows down instead of growing
/// memory. A request larger than a bound waits until nothing else holds it.
#[derive(Clone)]
pub struct RequestBytes {
    broker: Arc<Semaphore>,
    broker_max: u32,
    connection_max: u32,
    /// Woken whenever room is given back (a [`Held`] dropped).
    released: Arc<Notify>,
}

impl RequestBytes {
    pub fn new(broker_max: u64, connection_max: u64) -> RequestBytes {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        RequestBytes {
            broker: Arc::new(Semaphore::new(clamp(broker_max) as usize)),
            broker_max: clamp(broker_max),
            connection_max: clamp(connection_max),
            released: Arc::new(Notify::new()),
        }
    }
}

/// What a request holds until its response is written.
struct Held {
    /// The permits (always `Some` until dropped).
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    bytes: i64,
    gauge: prometheus_client::metrics::gauge::Gauge,
    released: Arc<Notify>,
    /// When its length prefix was read.
    arrived: Instant,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
        // Room first, then the news, so a woken waiter finds the room.
        drop(self.permits.take());
        self.released.notify_waiters();
    }
}

/// Kafka connections open, in all and by peer address, with their caps.
struct ConnectionCount {
    open: Mutex<(u32, HashMap<IpAddr, u32>)>,
    max: u32,
    max_per_ip: u32,
}

/// One open connection counted in a [`ConnectionCount`] until dropped.
struct Counted {
    count: Arc<ConnectionCount>,
    ip: IpAddr,
}

impl ConnectionCount {
    /// Counts a new connection from `ip`, or says which cap refuses it.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Counted, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= self.max {
            return Err("max-connections");
        }
        let per_ip = open.1.entry(ip).or_insert(0);
        if *per_ip >= self.max_per_ip {
            return Err("max-connections-per-ip");
        }
        *per_ip += 1;
        open.0 += 1;
        Ok(Counted {
            count: self.clone(),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.count.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Refused connections, logged once a minute at most.
static REFUSED_LOG: LogLimiter = LogLimiter::new();
/// Frames above `socket.request.max.bytes`, logged once a minute at most.
static TOO_LARGE_LOG: LogLimiter = LogLimiter::new();
/// Failed accepts (out of descriptors), logged once a minute at most.
static ACCEPT_LOG: LogLimiter = LogLimiter::new();
/// Bodies that did not arrive in time, logged once a minute at most.
static SLOW_BODY_LOG: LogLimiter = LogLimiter::new();
/// TLS handshakes that failed, logged once a minute at most.
static TLS_LOG: LogLimiter = LogLimiter::new();
const CLIENT_LOG_EVERY_MS: u64 = 60_000;

/// Accepts Kafka connections on every listener until `shutdown` is
/// cancelled. The connection caps and request-byte bounds are the
/// broker's, shared by all listeners.
pub async fn run(
    broker: Arc<Broker>,
    listeners: Vec<(TcpListener, Arc<Listener>)>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let limits = RequestBytes::new(
        broker.config.queued_max_request_bytes,
        broker.config.connection_max_request_bytes,
    );
    let count = Arc::new(ConnectionCount {
        open: Mutex::new((0, HashMap::new())),
        max: broker.config.max_connections,
        max_per_ip: broker.config.max_connections_per_ip,
    });
    let accepts = listeners.into_iter().map(|(socket, listener)| {
        accept_loop(
            broker.clone(),
            socket,
            listener,
            shutdown.clone(),
            &tracker,
            limits.clone(),
            count.clone(),
        )
    });
    futures::future::join_all(accepts).await;
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait()).await;
}

async fn accept_loop(
    broker: Arc<Broker>,
    socket: TcpListener,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    limits: RequestBytes,
    count: Arc<ConnectionCount>,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let counted = match count.admit(peer.ip()) {
                        Ok(c) => c,
                        Err(cap) => {
                            broker.metrics.connections_refused.inc();
                            if let Some(more) = REFUSED_LOG.allow(CLIENT_LOG_EVERY_MS) {
                                tracing::warn!(%peer, cap, suppressed = more, "connection refused: over the connection cap");
                            }
                            drop(stream);
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    let limits = limits.clone();
                    let session = Session::new(listener.clone(), peer);
                    tracker.spawn(async move {
                        tracing::debug!(%peer, listener = %session.listener.name, "connection opened");
                        broker.metrics.connections.inc();
                        accepted_connection(broker.clone(), stream, session, shutdown, limits).await;
                        drop(counted);
                        broker.metrics.connections.dec();
                        tracing::debug!(%peer, "connection closed");
                    });
                }
                Err(e) => {
                    // Out of descriptors, typically: clients can cause it at will.
                    if let Some(more) = ACCEPT_LOG.allow(CLIENT_LOG_EVERY_MS) {
                        tracing::warn!(error = %e, suppressed = more, "accept failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves an accepted connection: after its TLS handshake on a TLS
/// listener, as it is on others.
async fn accepted_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    mut session: Session,
    shutdown: CancellationToken,
    limits: RequestBytes,
) {
    let Some(tls) = session.listener.tls.clone() else {
        return serve_connection(broker, stream, session, shutdown, limits).await;
    };
    let limit = Duration::from_millis(broker.config.request_body_timeout_ms);
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        h = tokio::time::timeout(limit, tls.acceptor().accept(stream)) => h,
    };
    let failure = match handshake {
        Ok(Ok(stream)) => {
            // On an SSL listener a client certificate names the principal
            // (SASL names it on SASL_SSL).
            if session.listener.protocol == SecurityProtocol::Ssl {
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first());
                if let Some(principal) =
                    leaf.and_then(|c| crate::security::tls::certificate_principal(c))
                {
                    tracing::debug!(peer = %session.peer, %principal, "client certificate");
                    session.principal = Some(principal.into());
                }
            }
            return serve_connection(broker, stream, session, shutdown, limits).await;
        }
        // The client went away mid-handshake (a client shutting down):
        // nothing was refused.
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            tracing::debug!(peer = %session.peer, error = %e, "connection closed during the TLS handshake");
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "no handshake within {} ms (request-body-timeout-ms)",
            limit.as_millis()
        ),
    };
    broker.metrics.tls_handshake_failures.inc();
    if let Some(more) = TLS_LOG.allow(CLIENT_LOG_EVERY_MS) {
        tracing::warn!(peer = %session.peer, listener = %session.listener.name, error = %failure, suppressed = more, "TLS handshake failed; closing connection");
    }
}

/// A client connection: plain TCP, or TLS over it.
trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    type Reader: AsyncRead + Send + Unpin + 'static;
    type Writer: RegionWriter;
    fn split(self) -> (Self::Reader, Self::Writer);
}

impl Connection for TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

impl Connection for TlsStream {
    type Reader = tokio::io::ReadHalf<TlsStream>;
    type Writer = tokio::io::WriteHalf<TlsStream>;
    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
}

/// How the write half of a connection sends a file range of a response.
trait RegionWriter: AsyncWrite + Send + Unpin + Sized + 'static {
    /// Writes `region` after what `w` buffers; `scratch` is the
    /// connection's reused buffer for writers that must copy.
    fn write_region<'a>(
        w: &'a mut BufWriter<Self>,
        region: &'a zerocopy::FileRegion,
        scratch: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a;
}

impl RegionWriter for tokio::net::tcp::OwnedWriteHalf {
    async fn write_region(
        w: &mut BufWriter<Self>,
        region: &zerocopy::FileRegion,
        _scratch: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        w.flush().await?;
        zerocopy::send_file(w.get_ref().as_ref(), region).await
    }
}

impl RegionWriter for tokio::io::WriteHalf<TlsStream> {
    async fn write_region(
        w: &mut BufWriter<Self>,
        region: &zerocopy::FileRegion,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        zerocopy::copy_file(w, region, scratch).await
    }
}

async fn serve_connection<C: Connection>(
    broker: Arc<Broker>,
    stream: C,
    mut session: Session,
    shutdown: CancellationToken,
    limits: RequestBytes,
) {
    let peer = session.peer;
    let (reader, writer) = stream.split();
    // Pipelined requests come several to a read: one recv takes the length
    // prefixes and bodies of all that have arrived. A body bigger than the
    // buffer is read straight into its own.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (tx, rx) = mpsc::channel::<(i16, api::Pending, Held)>(MAX_IN_FLIGHT_PER_CONNECTION);
    // The writer cancels this when it stops (peer gone, or a request that
    // must close the connection), which stops the reader too.
    let closed = shutdown.child_token();
    let writer_task = tokio::spawn(write_responses(
        writer,
        rx,
        closed.clone(),
        broker.metrics.clone(),
    ));
    let connection = Arc::new(Semaphore::new(limits.connection_max as usize));
    let idle = Duration::from_millis(broker.config.connections_max_idle_ms);
    let body_timeout = Duration::from_millis(broker.config.request_body_timeout_ms);
    loop {
        let size = tokio::select! {
            _ = closed.cancelled() => break,
            f = frame::read_len(&mut reader, session.max_frame(broker.config.socket_request_max_bytes)) => f,
            _ = idle_for(idle, &connection, limits.connection_max) => {
                tracing::debug!(%peer, idle_ms = idle.as_millis() as u64, "idle connection closed");
                break;
            }
        };
        let arrived = Instant::now();
        let size = match size {
            Ok(Some(size)) => size,
            Ok(None) => break,
            Err(frame::FrameError::TooLarge { size, max }) => {
                if let Some(more) = TOO_LARGE_LOG.allow(CLIENT_LOG_EVERY_MS) {
                    let limit = if session.authenticated() {
                        "socket.request.max.bytes"
                    } else {
                        "the limit before SASL authentication"
                    };
                    tracing::warn!(%peer, size, max, suppressed = more, "request frame exceeds {limit}; closing connection");
                }
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection read failed");
                break;
            }
        };
        // Hold the frame's bytes before reading it: waits while this
        // connection or the broker has too much in flight.
        let held = tokio::select! {
            _ = closed.cancelled() => break,
            h = hold(&connection, &limits, size, &broker, arrived) => h,
        };
        let Some(held) = held else { break };
        let frame = tokio::select! {
            _ = closed.cancelled() => break,
            f = tokio::time::timeout(body_timeout, frame::read_body(&mut reader, size)) => f,
        };
        let frame = match frame {
            Ok(Ok(f)) => f,
            Err(_) => {
                broker.metrics.request_body_timeouts.inc();
                if let Some(more) = SLOW_BODY_LOG.allow(CLIENT_LOG_EVERY_MS) {
                    tracing::warn!(%peer, size, timeout_ms = body_timeout.as_millis() as u64, suppressed = more, "request body did not arrive in time (request-body-timeout-ms); closing connection");
                }
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection read failed");
                break;
            }
        };
        // Handled one at a time: what must happen in order (appends) is done
        // when this returns; waiting for durability or data continues in
        // the returned future while the next request is read.
        let api_key = frame::api_key(&frame);
        let pending = api::handle_frame(&broker, &mut session, frame).await;
        if tx.send((api_key, pending, held)).await.is_err() {
            break;
        }
        // Before waiting on the socket again, let the writer send what is
        // queued. Woken by the send, it waits in this worker's next-task
        // slot, which other workers do not steal from, so without a yield it
        // would wait for as long as pipelined requests keep this loop busy
        // (p999 12.8 ms from read to response written at 290k records/s,
        // against 0.8 ms with it). Requests already in the read buffer go
        // first, so responses to one read still share a write.
        if !frame::holds_frame(reader.buffer()) {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    let _ = writer_task.await;
}

/// Resolves once the connection has had nothing in flight for a whole
/// `idle` period (all of its request bytes given back).
async fn idle_for(idle: Duration, connection: &Semaphore, connection_max: u32) {
    loop {
        tokio::time::sleep(idle).await;
        if connection.available_permits() >= connection_max as usize {
            return;
        }
    }
}

/// Takes `size` bytes (at most each bound) from the connection's and the
/// broker's budgets, both at once or neither, waiting for room while there
/// is none; `None` if a semaphore is closed. Not first come first served:
/// a big request waiting for room does not hold up smaller ones (as
/// Kafka's memory pool), and holds nothing while it waits.
async fn hold(
    connection: &Arc<Semaphore>,
    limits: &RequestBytes,
    size: usize,
    broker: &Broker,
    arrived: Instant,
) -> Option<Held> {
    let want = u32::try_from(size).unwrap_or(u32::MAX).max(1);
    loop {
        // Registered before trying, so a release in between is not missed.
        let released = limits.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let c = match connection
            .clone()
            .try_acquire_many_owned(want.min(limits.connection_max))
        {
            Ok(c) => Some(c),
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => None,
        };
        if let Some(c) = c {
            match limits
                .broker
                .clone()
                .try_acquire_many_owned(want.min(limits.broker_max))
            {
                Ok(b) => {
                    let gauge = broker.metrics.request_bytes_in_flight.clone();
                    gauge.inc_by(size as i64);
                    return Some(Held {
                        permits: Some((c, b)),
                        bytes: size as i64,
                        gauge,
                        released: limits.released.clone(),
                        arrived,
                    });
                }
                Err(TryAcquireError::Closed) => return None,
                Err(TryAcquireError::NoPermits) => drop(c),
            }
        }
        released.await;
    }
}

async fn write_responses<W: RegionWriter>(
    writer: W,
    mut rx: mpsc::Receiver<(i16, api::Pending, Held)>,
    closed: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let _close_on_exit = closed.drop_guard();
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut scratch = Vec::new();
    loop {
        // Flush whenever the writer would wait (for the next request or for
        // the next response to be ready), so buffered responses never sit
        // behind one that is still waiting: pipelined responses that are
        // ready together still share writes.
        let next = match rx.try_recv() {
            Ok(n) => Some(n),
            Err(mpsc::error::TryRecvError::Empty) => {
                if writer.flush().await.is_err() {
                    break;
                }
                rx.recv().await
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some((api_key, mut pending, held)) = next else {
            break;
        };
        let outcome = match (&mut pending).now_or_never() {
            Some(o) => o,
            None => {
                if writer.flush().await.is_err() {
                    break;
                }
                pending.await
            }
        };
        let (parts, last) = match outcome {
            api::Outcome::Reply(b) => (vec![Part::Mem(b)], false),
            api::Outcome::ReplyThenClose(b) => (vec![Part::Mem(b)], true),
            api::Outcome::Spliced(parts) => (parts, false),
            api::Outcome::NoReply => continue,
            api::Outcome::Close => break,
        };
        if let Err(e) = write_frame(&mut writer, &parts, &mut scratch).await {
            tracing::debug!(error = %e, "response write failed; closing connection");
            break;
        }
        metrics.observe_request_total(api_key, held.arrived.elapsed().as_secs_f64());
        drop(held);
        if last {
            break;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.into_inner().shutdown().await;
}

/// Writes one response frame: the length, then the parts; file parts go
/// as the connection sends them (sendfile on plain TCP).
async fn write_frame<W: RegionWriter>(
    writer: &mut BufWriter<W>,
    parts: &[Part],
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    let total = zerocopy::parts_len(parts);
    let len = u32::try_from(total)
        .map_err(|_| std::io::Error::other(format!("response too large. size={total}")))?;
    writer.write_all(&len.to_be_bytes()).await?;
    for part in parts {
        match part {
            Part::Mem(b) => writer.write_all(b).await?,
            Part::File(region) => W::write_region(writer, region, scratch).await?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The congestion control of the connection `listener` accepts from a
    /// fresh client.
    async fn accepted_congestion(listener: &TcpListener) -> String {
        let addr = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (stream, _) = accepted.expect("accept");
        let name = socket2::SockRef::from(&stream)
            .tcp_congestion()
            .expect("TCP_CONGESTION");
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string()
    }

    #[tokio::test]
    async fn accepted_connections_inherit_the_listeners_congestion_control() {
        let any = "127.0.0.1:0".parse().expect("addr");
        // reno is built into every Linux kernel.
        let reno = bind_kafka(any, Some("reno")).expect("bind with reno");
        assert_eq!(accepted_congestion(&reno).await, "reno");
        let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .expect("system default");
        let plain = bind_kafka(any, None).expect("bind");
        assert_eq!(accepted_congestion(&plain).await, system.trim());
    }

    #[tokio::test]
    async fn an_unknown_congestion_control_is_an_error_naming_it() {
        let any = "127.0.0.1:0".parse().expect("addr");
        let e = bind_kafka(any, Some("nosuchcc")).expect_err("unknown algorithm");
        let text = e.to_string();
        assert!(text.contains("tcp-congestion-control=nosuchcc"), "{text}");
        assert!(
            text.contains("reno"),
            "lists what the kernel offers: {text}"
        );
    }
}
