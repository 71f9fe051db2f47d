//! What goes into a group and what comes out: decoded requests, their
//! results, and the [`Effects`] an operation asks the caller to carry out.

use bytes::Bytes;

use crate::group::error::GroupError;

/// Identifies one parked JoinGroup or SyncGroup request (chosen by the caller).
pub type Token = u64;

/// One protocol a member supports (e.g. `range` with its subscription).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A JoinGroup request, after decoding.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader may be told to skip assignment.
    pub supports_skip_assignment: bool,
    /// The id a new member gets (the caller generates it).
    pub new_member_id: String,
}

/// A member as the leader sees it in the JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A successful JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub member_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup request, after decoding.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+: must match the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment, per member id.
    pub assignments: Vec<(String, Bytes)>,
}

/// A successful SyncGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A member leaving (LeaveGroup v3+ can name several, by id or instance id).
#[derive(Clone, Debug)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// The answer to a parked request.
#[derive(Debug)]
pub enum Reply {
    Join(Token, Result<JoinResult, GroupError>),
    Sync(Token, Result<SyncResult, GroupError>),
}

/// What the caller must do after an operation.
#[derive(Debug, Default)]
pub struct Effects {
    /// Answers to deliver, in order.
    pub replies: Vec<Reply>,
    /// Persist [`Group::snapshot`](super::Group::snapshot) (the membership
    /// or assignment changed in a way a restart should see).
    pub store: bool,
}

impl Effects {
    pub(super) fn join(&mut self, token: Token, r: Result<JoinResult, GroupError>) {
        self.replies.push(Reply::Join(token, r));
    }

    pub(super) fn sync(&mut self, token: Token, r: Result<SyncResult, GroupError>) {
        self.replies.push(Reply::Sync(token, r));
    }
}
