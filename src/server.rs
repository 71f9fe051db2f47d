//! Listeners and the connection loop.
//!
//! Overview: [`run`] accepts connections on the Kafka listener until the
//! shutdown token fires. Each connection reads 4-byte length-prefixed frames;
//! a frame above `socket.request.max.bytes` closes the connection with a log
//! line. Requests are handled one at a time in arrival order, so pipelined
//! produce requests append in order; the waiting parts (acks=all
//! durability, fetch long-polls) run concurrently, so they do not hold up
//! the requests pipelined behind them. A writer task sends the responses in
//! request order (Kafka's guarantee).
//!
//! Consistency: responses leave in the order requests arrived; requests that
//! get no response (`acks=0` produce) still take their turn.
//!
//! Cancellation: on shutdown, connections stop reading; handlers in flight
//! finish (bounded by their own timeouts) before the writer ends.

pub mod admin;
pub mod frame;

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::broker::Broker;

/// How many requests of one connection may be in flight at once; the reader
/// stops reading when the writer is this far behind (backpressure).
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// Accepts Kafka connections until `shutdown` is cancelled.
pub async fn run(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        tracing::debug!(%peer, "connection opened");
                        broker.metrics.connections.inc();
                        serve_connection(broker.clone(), stream, shutdown).await;
                        broker.metrics.connections.dec();
                        tracing::debug!(%peer, "connection closed");
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait()).await;
}

async fn serve_connection(broker: Arc<Broker>, stream: TcpStream, shutdown: CancellationToken) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<api::Pending>(MAX_IN_FLIGHT_PER_CONNECTION);
    // The writer cancels this when it stops (peer gone, or a request that
    // must close the connection), which stops the reader too.
    let closed = shutdown.child_token();
    let writer_task = tokio::spawn(write_responses(writer, rx, closed.clone()));
    let max = broker.config.socket_request_max_bytes;
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => break,
            f = frame::read_frame(&mut reader, max) => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(frame::FrameError::TooLarge { size, max }) => {
                tracing::warn!(%peer, size, max, "request frame exceeds socket.request.max.bytes; closing connection");
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection read failed");
                break;
            }
        };
        // Handled one at a time: what must happen in order (appends) is done
        // when this returns; waiting for durability or data continues in
        // the returned future while the next request is read.
        let pending = api::handle_frame(&broker, frame).await;
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer_task.await;
}

async fn write_responses(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<api::Pending>,
    closed: CancellationToken,
) {
    let _close_on_exit = closed.drop_guard();
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(pending) = rx.recv().await {
        let body = match pending.await {
            api::Outcome::Reply(b) => b,
            api::Outcome::NoReply => continue,
            api::Outcome::Close => break,
        };
        let len = (body.len() as u32).to_be_bytes();
        if writer.write_all(&len).await.is_err() || writer.write_all(&body).await.is_err() {
            break;
        }
        // Flush when nothing else is ready, so pipelined responses share writes.
        if rx.is_empty() && writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.into_inner().shutdown().await;
}
