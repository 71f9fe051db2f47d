//! The raft network between controllers.
//!
//! There is no controller transport yet. A one-voter cluster never sends an
//! RPC, so nothing reaches this code today; if it ever does (a membership
//! with a second node), every call fails with `Unreachable` naming the target,
//! which is the truth. A second controller plugs its RPC client in here.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::{MetadataError, NodeId, TypeConfig};

/// Creates [`Peer`] clients.
pub(crate) struct Network;

/// A client for one peer controller; every call fails with `Unreachable`.
pub(crate) struct Peer {
    target: NodeId,
    addr: String,
}

impl Peer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let cause = MetadataError::NoTransport {
            target: self.target,
            addr: self.addr.clone(),
        };
        RPCError::Unreachable(Unreachable::new(&cause))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_rpc_is_unreachable_and_names_the_target() {
        let mut peer = Network
            .new_client(2, &BasicNode::new("10.0.0.2:9093"))
            .await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let err = peer
            .vote(vote, RPCOption::new(std::time::Duration::from_secs(1)))
            .await
            .expect_err("no transport");
        assert!(matches!(err, RPCError::Unreachable(_)));
        let text = err.to_string();
        assert!(text.contains("target=2"), "{text}");
        assert!(text.contains("10.0.0.2:9093"), "{text}");
    }
}
