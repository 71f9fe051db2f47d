//! A metadata quorum of several voters: starting one (the lowest id
//! initializes, learners join), forwarding proposals to the leader,
//! brokers' heartbeats and the leader's fencing of silent ones, and the
//! quorum's status (DescribeQuorum).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{
    network, new_cluster_id, Command, CommandResult, Metadata, MetadataError, NodeId, TypeConfig,
    WAIT_LOG_EVERY,
};

/// The metadata quorum as its leader sees it (Kafka's DescribeQuorum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub leader: NodeId,
    /// The leader's raft term (Kafka's leader epoch of the quorum).
    pub term: u64,
    /// One past the last entry the leader has applied.
    pub high_watermark: i64,
    pub voters: Vec<VoterStatus>,
    /// Learners: brokers that follow the log without voting.
    pub observers: Vec<VoterStatus>,
}

/// One voter of [`QuorumStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterStatus {
    pub node_id: NodeId,
    /// Its controller address.
    pub addr: String,
    /// One past the last entry the leader knows it holds (0: none known).
    pub log_end: i64,
}

impl QuorumStatus {
    /// The status from `raft`'s metrics, if it leads.
    pub(super) fn of(raft: &Raft<TypeConfig>) -> Option<QuorumStatus> {
        let m = raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let next = |index: Option<u64>| index.map_or(0, |i| i as i64 + 1);
        let replication = m.replication.clone().unwrap_or_default();
        let membership = m.membership_config.membership();
        let status = |id: NodeId| VoterStatus {
            node_id: id,
            addr: membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default(),
            log_end: if id == m.id {
                next(m.last_log_index)
            } else {
                next(replication.get(&id).copied().flatten().map(|l| l.index))
            },
        };
        let voters = membership.voter_ids().map(status).collect();
        let observers = membership.learner_ids().map(status).collect();
        Some(QuorumStatus {
            leader: m.id,
            term: m.current_term,
            high_watermark: next(m.last_applied.map(|l| l.index)),
            voters,
            observers,
        })
    }
}

/// How often a broker waiting to catch up with the metadata log says so.
const CATCH_UP_REPORT: Duration = Duration::from_secs(10);

/// The controller listener's view of this node: the running raft, and
/// when each broker last said it runs.
pub(super) struct Controller {
    pub(super) raft: Arc<ArcSwap<Raft<TypeConfig>>>,
    pub(super) liveness: Arc<Liveness>,
}

/// When each broker's heartbeat last arrived here (the leader acts on it).
#[derive(Default)]
pub(crate) struct Liveness {
    seen: Mutex<HashMap<NodeId, tokio::time::Instant>>,
}

impl Liveness {
    fn seen(&self, node_id: NodeId) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node_id, tokio::time::Instant::now());
    }

    fn last_seen(&self, node_id: NodeId) -> Option<tokio::time::Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node_id)
            .copied()
    }
}

impl network::Handler for Controller {
    fn raft(&self) -> Arc<Raft<TypeConfig>> {
        self.raft.load_full()
    }

    fn heartbeat(&self, node_id: NodeId) {
        self.liveness.seen(node_id);
    }

    async fn join(&self, node_id: NodeId, addr: String) -> Result<(), network::ProposeRefused> {
        let raft = self.raft.load_full();
        let known = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node_id)
            .is_some_and(|n| n.addr == addr);
        // A broker joining counts as heard from: an unregistered broker
        // starting again has a session to register before the leader
        // would remove it from the learners again.
        self.liveness.seen(node_id);
        if known {
            return Ok(());
        }
        match raft
            .add_learner(node_id, BasicNode::new(addr.clone()), false)
            .await
        {
            Ok(_) => {
                tracing::info!(node_id, %addr, "a broker joined the metadata log as a learner");
                Ok(())
            }
            Err(e) => Err(refused(e)),
        }
    }

    async fn add_voter(&self, node_id: NodeId) -> Result<(), network::ProposeRefused> {
        promote(&self.raft.load_full(), node_id).await
    }

    async fn propose(&self, cmd: Command) -> Result<(u64, CommandResult), network::ProposeRefused> {
        match self.raft.load_full().client_write(cmd).await {
            Ok(r) => Ok((r.log_id.index, r.data)),
            Err(e) => Err(refused(e)),
        }
    }
}

/// Makes the learner `node_id` a voter (on the leader): joint consensus,
/// committed before it returns. A voter already is left as it is; a node
/// that never joined as a learner is refused.
async fn promote(raft: &Raft<TypeConfig>, node_id: NodeId) -> Result<(), network::ProposeRefused> {
    let (voter, learner) = {
        let m = raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let known = (
            membership.voter_ids().any(|v| v == node_id),
            membership.learner_ids().any(|l| l == node_id),
        );
        known
    };
    if voter {
        return Ok(());
    }
    if !learner {
        return Err(network::ProposeRefused {
            leader: None,
            message: "the node does not follow the metadata log; start it with --controller-quorum-voters naming the current voters, then add it".to_string(),
        });
    }
    let ids = std::collections::BTreeSet::from([node_id]);
    match raft
        .change_membership(openraft::ChangeMembers::AddVoterIds(ids), false)
        .await
    {
        Ok(_) => {
            tracing::info!(node_id, "a learner became a metadata voter");
            Ok(())
        }
        Err(e) => Err(refused(e)),
    }
}

/// Why this node did not commit a write: not the leader (naming the one it
/// knows), or raft's own error.
fn refused(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> network::ProposeRefused {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => network::ProposeRefused {
            leader: f.leader_id,
            message: format!("not the metadata leader. leader={:?}", f.leader_id),
        },
        e => network::ProposeRefused {
            leader: None,
            message: e.to_string(),
        },
    }
}

impl Metadata {
    /// The raft leader this node knows, with its controller address.
    fn leader(&self) -> (Option<NodeId>, Option<String>) {
        let m = self.raft().metrics();
        let m = m.borrow();
        let addr = m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        });
        (m.current_leader, addr)
    }

    /// [`Metadata::start`] with several voters: a new cluster is
    /// initialized by the voter with the lowest id, with every voter in its
    /// membership (the others learn it from that voter's first entries),
    /// then the node waits for a leader, however long the other voters
    /// take to start, and applies the cluster id through the leader (a
    /// no-op once one is set).
    pub(super) async fn start_in_quorum(&self) -> Result<(), MetadataError> {
        let node_id = self.node_id;
        let raft = self.raft();
        let voters = self.reopen.voters.clone().unwrap_or_default();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(MetadataError::raft("check initialized"))?;
        let first = voters.keys().next() == Some(&node_id);
        // A voter added since the voters were configured (the quorum grew)
        // is in the stored membership already; it has nobody to ask.
        let stored_voter = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node_id);
        if !voters.contains_key(&node_id) && !stored_voter {
            self.join_as_learner(&voters).await;
        }
        if !initialized && first {
            tracing::info!(node_id, voters = ?voters, "initializing a new metadata quorum");
            let members: BTreeMap<NodeId, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                .collect();
            raft.initialize(members)
                .await
                .map_err(MetadataError::raft("initialize"))?;
        }
        self.spawn_leader_watcher();
        loop {
            let waited = raft
                .wait(Some(WAIT_LOG_EVERY))
                .metrics(|m| m.current_leader.is_some(), "metadata leader")
                .await;
            match waited {
                Ok(_) => break,
                Err(openraft::metrics::WaitError::Timeout(..)) => {
                    tracing::warn!(node_id, voters = ?voters, "no metadata leader yet; waiting for a quorum of voters");
                }
                Err(e) => return Err(MetadataError::raft("wait for a leader")(e)),
            }
        }
        self.update_own_address().await;
        loop {
            match self
                .propose(Command::InitCluster {
                    cluster_id: new_cluster_id(),
                })
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(node_id, error = %e, "cannot reach the metadata leader yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!(node_id, cluster_id = %self.view().cluster_id, "joined the metadata quorum");
        Ok(())
    }

    /// A node that ran alone and now starts as a voter of a quorum (the
    /// first step of growing it into a cluster) still has its old address
    /// in the membership, which the other nodes would call: as the leader,
    /// it sets its controller address there.
    async fn update_own_address(&self) {
        let raft = self.raft();
        let stored = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.current_leader != Some(self.node_id) {
                return;
            }
            m.membership_config
                .membership()
                .get_node(&self.node_id)
                .map(|n| n.addr.clone())
        };
        let addr = &self.reopen.raft_addr;
        if stored.as_ref() == Some(addr) {
            return;
        }
        let nodes = BTreeMap::from([(self.node_id, BasicNode::new(addr.clone()))]);
        match raft
            .change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
            .await
        {
            Ok(_) => tracing::info!(
                node_id = self.node_id,
                old = ?stored,
                new = %addr,
                "this node's controller address in the metadata membership changed"
            ),
            Err(e) => tracing::warn!(
                node_id = self.node_id,
                error = %e,
                "cannot set this node's controller address in the metadata membership"
            ),
        }
    }

    /// Makes the learner `node_id` a voter of the metadata quorum (Kafka's
    /// AddRaftVoter), on the leader or forwarded to it. A voter already is
    /// left as it is.
    pub async fn add_voter(&self, node_id: NodeId) -> Result<(), MetadataError> {
        if self.reopen.voters.is_none() {
            return Err(MetadataError::AddVoter {
                node_id,
                reason: "this node runs alone; restart it with --controller-listen and itself as the one voter of --controller-quorum-voters first".to_string(),
            });
        }
        let refused = |r: network::ProposeRefused| MetadataError::AddVoter {
            node_id,
            reason: r.message,
        };
        if self.is_leader() {
            return promote(&self.raft(), node_id).await.map_err(refused);
        }
        let (_, mut peer) = self.leader_peer()?;
        match peer
            .call(
                &network::Request::AddVoter { node_id },
                network::PROPOSE_TIMEOUT,
            )
            .await?
        {
            network::Response::AddVoter(r) => r.map_err(refused),
            other => Err(MetadataError::Raft {
                op: "add voter",
                source: format!("unexpected answer: {other:?}").into(),
            }),
        }
    }

    /// Asks the voters, in turn, to add this node as a learner until the
    /// leader does (the others refuse, naming it); retries for as long as
    /// it takes a quorum to start.
    async fn join_as_learner(&self, voters: &BTreeMap<NodeId, String>) {
        let node_id = self.node_id;
        let addr = self.reopen.raft_addr.clone();
        let mut logged = tokio::time::Instant::now();
        loop {
            for (id, voter) in voters {
                let mut peer = network::Peer::new(*id, voter.clone(), self.reopen.tls.clone());
                let req = network::Request::Join {
                    node_id,
                    addr: addr.clone(),
                };
                if let Ok(network::Response::Join(Ok(()))) =
                    peer.call(&req, Duration::from_secs(5)).await
                {
                    tracing::info!(node_id, %addr, "following the metadata log as a learner");
                    return;
                }
            }
            if logged.elapsed() >= WAIT_LOG_EVERY {
                tracing::warn!(node_id, voters = ?voters, "no metadata leader has added this broker yet; retrying");
                logged = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `cmd` to the leader `leader` at `addr` to commit.
    pub(super) async fn forward(
        &self,
        leader: NodeId,
        addr: String,
        cmd: &Command,
    ) -> Result<Result<(u64, CommandResult), network::ProposeRefused>, MetadataError> {
        let mut peer = network::Peer::new(leader, addr, self.reopen.tls.clone());
        // Not connected: nothing was sent, so it is safe to try again (a
        // leader that just stopped, before the others elect a new one).
        if let Err(e) = peer.connect().await {
            return Ok(Err(network::ProposeRefused {
                leader: Some(leader),
                message: e.to_string(),
            }));
        }
        match peer
            .call(
                &network::Request::Propose(cmd.clone()),
                network::PROPOSE_TIMEOUT,
            )
            .await?
        {
            network::Response::Propose(r) => Ok(r),
            other => Err(MetadataError::Raft {
                op: "forward proposal",
                source: format!("unexpected answer: {other:?}").into(),
            }),
        }
    }

    /// Waits until this node has applied the log up to `index`.
    pub(super) async fn wait_applied(&self, index: u64) -> Result<(), MetadataError> {
        let mut applied = self.publisher.applied.subscribe();
        let waited =
            tokio::time::timeout(network::PROPOSE_TIMEOUT, applied.wait_for(|a| *a >= index)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Err(_) => Err(MetadataError::NoLeader {
                node_id: self.node_id,
            }),
        }
    }

    /// Keeps the brokers' liveness until `cancel` (with several voters;
    /// a node alone has nobody to watch): every heartbeat interval (a
    /// quarter of `session`, at most 2 s) this broker tells the leader it
    /// runs, and the leader fences a registered broker it has not heard
    /// from for `session` (Kafka's `broker.session.timeout.ms`) and lifts
    /// the fence when it hears from it again. A new leader gives every
    /// broker a whole session from when it took over.
    pub async fn watch_brokers(&self, session: Duration, cancel: CancellationToken) {
        if self.reopen.voters.is_none() {
            return;
        }
        let every = (session / 4).clamp(Duration::from_millis(50), Duration::from_secs(2));
        let mut peer: Option<(NodeId, network::Peer)> = None;
        let mut leading_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let (leader, addr) = self.leader();
            match (leader, addr) {
                (Some(l), _) if l == self.node_id => {
                    self.liveness.seen(self.node_id);
                    let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
                    self.fence_silent(session, since).await;
                    self.remove_unregistered_learners(session, since).await;
                }
                (Some(l), Some(addr)) => {
                    leading_since = None;
                    if peer.as_ref().is_none_or(|(id, _)| *id != l) {
                        peer = Some((l, network::Peer::new(l, addr, self.reopen.tls.clone())));
                    }
                    if let Some((_, p)) = peer.as_mut() {
                        let beat = network::Request::Heartbeat {
                            node_id: self.node_id,
                        };
                        if let Err(e) = p.call(&beat, every.max(Duration::from_millis(500))).await {
                            tracing::debug!(error = %e, "heartbeat to the metadata leader failed");
                        }
                    }
                }
                _ => leading_since = None,
            }
        }
    }

    /// On the leader: fences the registered brokers silent for `session`
    /// (counted from `since` at the earliest) and unfences those heard from.
    async fn fence_silent(&self, session: Duration, since: tokio::time::Instant) {
        let view = self.view();
        let now = tokio::time::Instant::now();
        for id in view.brokers.keys() {
            let Ok(node) = NodeId::try_from(*id) else {
                continue;
            };
            let last = self
                .liveness
                .last_seen(node)
                .map_or(since, |seen| seen.max(since));
            let silent = now.saturating_duration_since(last) > session;
            let fenced = view.fenced.contains(id);
            let cmd = match (silent, fenced) {
                (true, false) => {
                    tracing::warn!(
                        node_id = id,
                        silent_ms = now.saturating_duration_since(last).as_millis() as u64,
                        "fencing a broker that stopped heartbeating"
                    );
                    Command::FenceBroker { node_id: *id }
                }
                // A broker that shut down stays fenced until it starts.
                (false, true) if view.shut_down.contains(id) => continue,
                (false, true) => {
                    tracing::info!(node_id = id, "broker heartbeats again; lifting its fence");
                    Command::UnfenceBroker { node_id: *id }
                }
                _ => continue,
            };
            if let Err(e) = self.propose(cmd).await {
                tracing::warn!(node_id = id, error = %e, "cannot change a broker's fence");
            }
        }
    }

    /// On the leader: removes from the metadata log's learners the
    /// unregistered brokers silent for `session` (counted from `since` at
    /// the earliest), so the log is no longer replicated to them. Voters
    /// stay: voters are only ever added.
    async fn remove_unregistered_learners(&self, session: Duration, since: tokio::time::Instant) {
        let view = self.view();
        if view.unregistered.is_empty() {
            return;
        }
        let raft = self.raft();
        let learners: Vec<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .learner_ids()
            .collect();
        let now = tokio::time::Instant::now();
        let gone: std::collections::BTreeSet<NodeId> = learners
            .into_iter()
            .filter(|id| i32::try_from(*id).is_ok_and(|id| view.unregistered.contains(&id)))
            .filter(|id| {
                let last = self.liveness.last_seen(*id).map_or(since, |s| s.max(since));
                now.saturating_duration_since(last) > session
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        match raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(gone.clone()), false)
            .await
        {
            Ok(_) => tracing::info!(
                node_ids = ?gone,
                "removed unregistered brokers from the metadata log's learners"
            ),
            Err(e) => tracing::warn!(
                node_ids = ?gone,
                error = %e,
                "cannot remove unregistered brokers from the metadata log's learners"
            ),
        }
    }

    /// Whether `node_id` is a voter of the metadata quorum.
    pub fn is_voter(&self, node_id: i32) -> bool {
        let Ok(id) = NodeId::try_from(node_id) else {
            return false;
        };
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id)
    }

    /// The quorum's status if this node leads it (no network).
    pub fn local_quorum_status(&self) -> Option<QuorumStatus> {
        QuorumStatus::of(&self.raft())
    }

    /// Whether this node is the metadata leader (the controller).
    pub fn is_leader(&self) -> bool {
        self.raft().metrics().borrow().state == ServerState::Leader
    }

    /// One past the last metadata entry this node has applied.
    pub fn applied_end(&self) -> i64 {
        self.raft()
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index as i64 + 1)
    }

    /// Waits until this node has applied every entry the quorum's leader
    /// had applied when asked, so that a starting broker opens its
    /// partitions, and takes their roles, from the cluster's current state
    /// rather than from what it applied before it stopped. Asks again
    /// until a leader answers (none while a majority of voters is down).
    pub async fn wait_caught_up(&self, cancel: &CancellationToken) -> Result<(), MetadataError> {
        let started = tokio::time::Instant::now();
        let mut last_said = started;
        let target = loop {
            match self.quorum_status().await {
                Ok(status) => break status.high_watermark,
                Err(e) => {
                    if last_said.elapsed() >= CATCH_UP_REPORT {
                        last_said = tokio::time::Instant::now();
                        tracing::warn!(error = %e, waited_ms = started.elapsed().as_millis() as u64, "waiting for a metadata leader to catch up with");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(MetadataError::ShutDown),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        };
        loop {
            let applied = self.applied_end();
            if applied >= target {
                tracing::info!(
                    applied,
                    leader_applied = target,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "caught up with the metadata log"
                );
                return Ok(());
            }
            if last_said.elapsed() >= CATCH_UP_REPORT {
                last_said = tokio::time::Instant::now();
                tracing::info!(
                    applied,
                    leader_applied = target,
                    "catching up with the metadata log"
                );
            }
            // The raft core may be replaced (restarted after an error):
            // watch the current one, a while at a time.
            let mut rx = self.raft().metrics();
            tokio::select! {
                _ = cancel.cancelled() => return Err(MetadataError::ShutDown),
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// The metadata leader this node knows, and a connection to make to it.
    fn leader_peer(&self) -> Result<(NodeId, network::Peer), MetadataError> {
        let (leader, addr) = self.leader();
        let (Some(leader), Some(addr)) = (leader, addr) else {
            return Err(MetadataError::NoLeader {
                node_id: self.node_id,
            });
        };
        let peer = network::Peer::new(leader, addr, self.reopen.tls.clone());
        Ok((leader, peer))
    }

    /// The quorum as its leader sees it: from this node if it leads, else
    /// asked of the leader over the controller transport.
    pub async fn quorum_status(&self) -> Result<QuorumStatus, MetadataError> {
        if let Some(status) = QuorumStatus::of(&self.raft()) {
            return Ok(status);
        }
        let (leader, mut peer) = self.leader_peer()?;
        match peer
            .call(&network::Request::QuorumStatus, Duration::from_secs(5))
            .await?
        {
            network::Response::QuorumStatus(Some(status)) => Ok(status),
            _ => Err(MetadataError::NotLeader {
                leader: Some(leader),
            }),
        }
    }
}
