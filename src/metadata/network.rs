//! The controller transport: raft RPCs between the metadata voters, and
//! proposals forwarded to the raft leader.
//!
//! Wire format: each message is a frame, a 4-byte big-endian length and
//! that many bytes of JSON (openraft's types are serde). A connection
//! carries one request at a time: the client writes a [`Request`] and
//! reads its [`Response`]. A client keeps its connection to a peer between
//! calls and drops it on any error; the next call connects again. Every
//! call is bounded by the time openraft allows it (`RPCOption`), or
//! [`PROPOSE_TIMEOUT`] for a forwarded proposal.
//!
//! Failure: a peer that cannot be reached, or that breaks the connection,
//! is `Unreachable` (openraft backs off and retries; a follower is simply
//! behind); a frame above [`MAX_FRAME`] or one that does not decode closes
//! the connection with a warning. The server answers whatever raft answers,
//! errors included, so the caller sees the peer's own refusal (a stale
//! term, a vote denied).
//!
//! Security: with [`ControllerTls`] (`--controller-security-protocol
//! SSL`) every connection is TLS and both ends present a certificate
//! signed by the cluster's CA; a connection that does not (a plain TCP
//! client, an unknown certificate) is closed after its failed handshake,
//! before any frame is read.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Command, CommandResult, MetadataError, NodeId, TypeConfig};

/// Largest frame either side accepts (snapshots travel in chunks well
/// below it).
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// How long a proposal forwarded to the leader may take.
pub(crate) const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Peers that cannot be reached (a voter down): one line per 30 s.
static UNREACHABLE_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// TLS of the controller transport: the listener's acceptor, which
/// requires a client certificate, and the connector peers use, which
/// presents this node's certificate. Both trust only the cluster's CA.
#[derive(Clone)]
pub struct ControllerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

/// A controller connection: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// Controller connections whose TLS handshake failed: one line per 30 s.
static HANDSHAKE_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new();

/// What one controller asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A command proposed on a node that does not lead, for the leader to
    /// commit.
    Propose(Command),
    /// The broker of this node runs (sent to the leader every heartbeat
    /// interval; a broker silent for the session timeout is fenced).
    Heartbeat {
        node_id: NodeId,
    },
    /// The quorum as the leader sees it (DescribeQuorum).
    QuorumStatus,
    /// A broker outside the voters asks to follow the metadata log as a
    /// learner, at its controller address.
    Join {
        node_id: NodeId,
        addr: String,
    },
    /// Make this learner a voter (AddRaftVoter), for the leader to do.
    AddVoter {
        node_id: NodeId,
    },
}

/// The answer to a [`Request`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// The command's log index and result, or why the node could not
    /// commit it (it does not lead either, say).
    Propose(Result<(u64, CommandResult), ProposeRefused>),
    Heartbeat,
    /// `None` when the asked node does not lead.
    QuorumStatus(Option<super::QuorumStatus>),
    /// Added as a learner, or why not (not the leader, say).
    Join(Result<(), ProposeRefused>),
    /// A voter now, or why not.
    AddVoter(Result<(), ProposeRefused>),
}

/// Why a forwarded proposal was not committed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ProposeRefused {
    /// The leader as the asked node knows it, if it does not lead.
    pub(crate) leader: Option<NodeId>,
    pub(crate) message: String,
}

async fn write_frame<T: Serialize, S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    msg: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame too large. len={}, max={MAX_FRAME}",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await
}

/// Reads one frame; `None` when the peer closed the connection before it.
async fn read_frame<T: for<'de> Deserialize<'de>, S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame too large. len={len}, max={MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Creates [`Peer`] clients.
pub(crate) struct Network {
    pub(crate) tls: Option<ControllerTls>,
}

/// A client for one peer controller.
pub(crate) struct Peer {
    target: NodeId,
    addr: String,
    conn: Option<Box<dyn Stream>>,
    tls: Option<ControllerTls>,
}

impl Peer {
    pub(crate) fn new(target: NodeId, addr: String, tls: Option<ControllerTls>) -> Peer {
        Peer {
            target,
            addr,
            conn: None,
            tls,
        }
    }

    /// Sends `req` and reads its answer within `ttl`; on any failure the
    /// connection is dropped.
    pub(crate) async fn call(
        &mut self,
        req: &Request,
        ttl: Duration,
    ) -> Result<Response, MetadataError> {
        let res = match tokio::time::timeout(ttl, self.exchange(req)).await {
            Ok(res) => res,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", ttl.as_millis()),
            )),
        };
        res.map_err(|source| {
            self.conn = None;
            self.unreachable_error(source)
        })
    }

    fn unreachable_error(&self, source: std::io::Error) -> MetadataError {
        MetadataError::Unreachable {
            target: self.target,
            addr: self.addr.clone(),
            source,
        }
    }

    /// Connects unless connected: an error here means nothing was sent.
    pub(crate) async fn connect(&mut self) -> Result<(), MetadataError> {
        self.open()
            .await
            .map(|_| ())
            .map_err(|e| self.unreachable_error(e))
    }

    /// The connection, made if there is none.
    async fn open(&mut self) -> std::io::Result<&mut Box<dyn Stream>> {
        if self.conn.is_none() {
            let c = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            c.set_nodelay(true)?;
            let conn: Box<dyn Stream> = match &self.tls {
                None => Box::new(c),
                Some(tls) => {
                    let host = self
                        .addr
                        .rsplit_once(':')
                        .map_or(self.addr.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = rustls_pki_types::ServerName::try_from(host.to_string())
                        .map_err(std::io::Error::other)?;
                    let tls = tokio::time::timeout(CONNECT_TIMEOUT, tls.connector.connect(name, c))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                    Box::new(tls)
                }
            };
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    async fn exchange(&mut self, req: &Request) -> std::io::Result<Response> {
        let conn = self.open().await?;
        write_frame(conn, req).await?;
        read_frame(conn)
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }

    fn unreachable<E: std::error::Error>(e: &MetadataError) -> RPCError<NodeId, BasicNode, E> {
        if let Some(suppressed) = UNREACHABLE_LOG.allow(30_000) {
            tracing::warn!(error = %e, suppressed, "controller peer unreachable");
        }
        RPCError::Unreachable(Unreachable::new(e))
    }

    fn unexpected<E: std::error::Error>(&self, what: &str) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::other(format!(
            "unexpected answer to {what}. target={}",
            self.target
        ));
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer::new(target, node.addr.clone(), self.tls.clone())
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(Ok(r))) => Ok(r),
            Ok(Response::AppendEntries(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(self.unexpected("append_entries")),
            Err(e) => Err(Self::unreachable(&e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(Response::InstallSnapshot(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(self.unexpected("install_snapshot")),
            Err(e) => Err(Self::unreachable(&e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(Ok(r))) => Ok(r),
            Ok(Response::Vote(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(self.unexpected("vote")),
            Err(e) => Err(Self::unreachable(&e)),
        }
    }
}

/// What the controller listener hands requests to: the running raft (it is
/// replaced when the core restarts), and how to commit a forwarded
/// proposal.
pub(crate) trait Handler: Send + Sync + 'static {
    fn raft(&self) -> Arc<Raft<TypeConfig>>;
    fn propose(
        &self,
        cmd: Command,
    ) -> impl std::future::Future<Output = Result<(u64, CommandResult), ProposeRefused>> + Send;
    /// Notes that the broker of node `node_id` runs.
    fn heartbeat(&self, node_id: NodeId);
    /// Adds node `node_id` at `addr` as a learner (on the leader).
    fn join(
        &self,
        node_id: NodeId,
        addr: String,
    ) -> impl std::future::Future<Output = Result<(), ProposeRefused>> + Send;
    /// Makes the learner `node_id` a voter (on the leader).
    fn add_voter(
        &self,
        node_id: NodeId,
    ) -> impl std::future::Future<Output = Result<(), ProposeRefused>> + Send;
}

/// Serves the controller listener until `cancel`: each connection in its
/// own task, one request at a time.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    cancel: CancellationToken,
    tls: Option<ControllerTls>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = Arc::clone(&handler);
        let cancel = cancel.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let stream: Box<dyn Stream> = match tls {
                None => Box::new(stream),
                Some(tls) => {
                    let accepted = tokio::select! {
                        _ = cancel.cancelled() => return,
                        a = tokio::time::timeout(CONNECT_TIMEOUT, tls.acceptor.accept(stream)) => a,
                    };
                    match accepted {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            if let Some(suppressed) = HANDSHAKE_LOG.allow(30_000) {
                                tracing::warn!(%peer, error = %e, suppressed, "controller TLS handshake failed; closing connection");
                            }
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = serve_connection(stream, handler) => if let Err(e) = r {
                    tracing::warn!(%peer, error = %e, "controller connection closed on an error");
                },
            }
        });
    }
}

async fn serve_connection<H: Handler>(
    mut stream: Box<dyn Stream>,
    handler: Arc<H>,
) -> std::io::Result<()> {
    while let Some(req) = read_frame::<Request, _>(&mut stream).await? {
        let resp = match req {
            Request::AppendEntries(r) => {
                Response::AppendEntries(handler.raft().append_entries(r).await)
            }
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(handler.raft().install_snapshot(r).await)
            }
            Request::Vote(r) => Response::Vote(handler.raft().vote(r).await),
            Request::Propose(cmd) => Response::Propose(handler.propose(cmd).await),
            Request::Heartbeat { node_id } => {
                handler.heartbeat(node_id);
                Response::Heartbeat
            }
            Request::QuorumStatus => {
                Response::QuorumStatus(super::QuorumStatus::of(&handler.raft()))
            }
            Request::Join { node_id, addr } => Response::Join(handler.join(node_id, addr).await),
            Request::AddVoter { node_id } => Response::AddVoter(handler.add_voter(node_id).await),
        };
        write_frame(&mut stream, &resp).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_peer_is_named_and_a_later_call_connects_again() {
        // A port nobody listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut peer = Network { tls: None }
            .new_client(2, &BasicNode::new(addr.clone()))
            .await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let err = peer
            .vote(vote.clone(), RPCOption::new(Duration::from_secs(1)))
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, RPCError::Unreachable(_)));
        let text = err.to_string();
        assert!(text.contains("target=2"), "{text}");
        assert!(text.contains(&addr), "{text}");
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let got: Request = read_frame(&mut s).await.unwrap().unwrap();
            assert!(matches!(
                got,
                Request::Propose(Command::AllocateProducerIds { count: 5 })
            ));
            write_frame(&mut s, &Response::Propose(Ok((7, CommandResult::Ok))))
                .await
                .unwrap();
            // A length past the limit: refused before any allocation.
            let (mut s, _) = listener.accept().await.unwrap();
            read_frame::<Request, _>(&mut s).await
        });
        let mut peer = Peer::new(1, addr.to_string(), None);
        let resp = peer
            .call(
                &Request::Propose(Command::AllocateProducerIds { count: 5 }),
                Duration::from_secs(5),
            )
            .await
            .expect("answered");
        assert!(matches!(
            resp,
            Response::Propose(Ok((7, CommandResult::Ok)))
        ));
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let refused = server.await.unwrap();
        assert!(refused.is_err(), "{refused:?}");
    }
}
