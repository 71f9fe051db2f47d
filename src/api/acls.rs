//! CreateAcls, DescribeAcls and DeleteAcls: the ACLs in cluster metadata
//! (`security::acl`). Changing them takes ALTER on the cluster, reading
//! them DESCRIBE; without `--authorizer acl` all three answer
//! SECURITY_DISABLED, as Kafka does without an authorizer.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::error::Code;
use crate::broker::Broker;
use crate::metadata::{Command, CommandResult};
use crate::security::acl::{AclBinding, AclFilter, Operation};
use crate::security::Caller;

/// The [`AclFilter`] of a request's seven filter fields, which
/// DescribeAcls and each DeleteAcls filter name alike.
macro_rules! filter_of {
    ($f:expr) => {
        AclFilter::from_wire(
            $f.resource_type_filter,
            $f.resource_name_filter.as_deref(),
            $f.pattern_type_filter,
            $f.principal_filter.as_deref(),
            $f.host_filter.as_deref(),
            $f.operation,
            $f.permission_type,
        )
    };
}

fn msg(s: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(s))
}

const NO_AUTHORIZER: &str = "no authorizer is configured (--authorizer acl)";

/// Why a request may not touch the ACLs at all: no authorizer, or the
/// caller lacks `op` on the cluster.
fn refusal(caller: &Caller, op: Operation) -> Option<(Code, String)> {
    if !caller.checked() {
        Some((Code::SecurityDisabled, NO_AUTHORIZER.into()))
    } else {
        caller
            .cluster_refusal(op)
            .map(|why| (Code::ClusterAuthorizationFailed, why))
    }
}

pub async fn create(
    broker: &Broker,
    req: CreateAclsRequest,
    caller: &Caller,
) -> CreateAclsResponse {
    let refused = refusal(caller, Operation::Alter);
    let mut outcomes: Vec<Result<AclBinding, (Code, String)>> = req
        .creations
        .iter()
        .map(|c| match &refused {
            Some(r) => Err(r.clone()),
            None => AclBinding::from_wire(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
            .map_err(|e| (Code::InvalidRequest, e)),
        })
        .collect();
    let acls: Vec<AclBinding> = outcomes.iter().filter_map(|o| o.clone().ok()).collect();
    if !acls.is_empty() {
        match broker
            .metadata
            .propose(Command::CreateAcls { acls: acls.clone() })
            .await
        {
            Ok(_) => {
                tracing::info!(principal = %caller.principal, count = acls.len(), acls = ?acls, "ACLs created")
            }
            Err(e) => {
                for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *o = Err((Code::NotController, e.to_string()));
                }
            }
        }
    }
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(_) => AclCreationResult::default(),
            Err((code, m)) => AclCreationResult::default()
                .with_error_code(code.code())
                .with_error_message(msg(m)),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe(
    broker: &Broker,
    req: DescribeAclsRequest,
    caller: &Caller,
) -> DescribeAclsResponse {
    let failed = |code: Code, m: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(msg(m))
    };
    if let Some((code, m)) = refusal(caller, Operation::Describe) {
        return failed(code, m);
    }
    let filter = match filter_of!(req) {
        Ok(f) => f,
        Err(e) => return failed(Code::InvalidRequest, e),
    };
    let view = broker.view();
    // ACLs are ordered by resource type, name and pattern first, so each
    // resource's entries are adjacent.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in view.acls.iter().filter(|b| filter.matches(b)) {
        let entry = AclDescription::default()
            .with_principal(StrBytes::from_string(b.principal.clone()))
            .with_host(StrBytes::from_string(b.host.clone()))
            .with_operation(b.operation.code())
            .with_permission_type(b.permission.code());
        match resources.last_mut() {
            Some(r)
                if r.resource_type == b.resource_type.code()
                    && r.pattern_type == b.pattern_type.code()
                    && *r.resource_name == *b.resource_name =>
            {
                r.acls.push(entry)
            }
            _ => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                    .with_pattern_type(b.pattern_type.code())
                    .with_acls(vec![entry]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(
    broker: &Broker,
    req: DeleteAclsRequest,
    caller: &Caller,
) -> DeleteAclsResponse {
    let refused = refusal(caller, Operation::Alter);
    let parsed: Vec<Result<AclFilter, (Code, String)>> = req
        .filters
        .iter()
        .map(|f| match &refused {
            Some(r) => Err(r.clone()),
            None => filter_of!(f).map_err(|e| (Code::InvalidRequest, e)),
        })
        .collect();
    let filters: Vec<AclFilter> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let mut deleted: std::vec::IntoIter<Vec<AclBinding>> = Vec::new().into_iter();
    let mut failure: Option<String> = None;
    if !filters.is_empty() {
        match broker
            .metadata
            .propose(Command::DeleteAcls { filters })
            .await
        {
            Ok(CommandResult::AclsDeleted { per_filter }) => {
                let n: usize = per_filter.iter().map(Vec::len).sum();
                if n > 0 {
                    tracing::info!(principal = %caller.principal, count = n, "ACLs deleted");
                }
                deleted = per_filter.into_iter();
            }
            Ok(other) => failure = Some(format!("unexpected metadata result {other:?}")),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    let results = parsed
        .into_iter()
        .map(|p| {
            let refused = match p {
                Err(r) => Some(r),
                Ok(_) => failure.clone().map(|m| (Code::NotController, m)),
            };
            if let Some((code, m)) = refused {
                return DeleteAclsFilterResult::default()
                    .with_error_code(code.code())
                    .with_error_message(msg(m));
            }
            let matching = deleted
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|b| {
                    DeleteAclsMatchingAcl::default()
                        .with_resource_type(b.resource_type.code())
                        .with_resource_name(StrBytes::from_string(b.resource_name))
                        .with_pattern_type(b.pattern_type.code())
                        .with_principal(StrBytes::from_string(b.principal))
                        .with_host(StrBytes::from_string(b.host))
                        .with_operation(b.operation.code())
                        .with_permission_type(b.permission.code())
                })
                .collect();
            DeleteAclsFilterResult::default().with_matching_acls(matching)
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

/// The operations Kafka reports in authorized-operations fields, by
/// resource type.
pub const TOPIC_OPERATIONS: &[Operation] = &[
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];
pub const CLUSTER_OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];
pub const GROUP_OPERATIONS: &[Operation] =
    &[Operation::Read, Operation::Delete, Operation::Describe];
