//! ACL administration: CreateAcls, DescribeAcls, DeleteAcls.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use super::error::{self, ClientError};
use super::Client;
use crate::security::acl::{AclBinding, AclFilter, PatternFilter, ANY, MATCH};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// `$message` with a filter's seven fields set from `$filter`
/// (DescribeAcls and each DeleteAcls filter name them alike).
macro_rules! with_filter {
    ($message:expr, $filter:expr) => {{
        let f: &AclFilter = $filter;
        $message
            .with_resource_type_filter(f.resource_type.map_or(ANY, |t| t.code()))
            .with_resource_name_filter(f.resource_name.as_deref().map(s))
            .with_pattern_type_filter(match f.pattern {
                PatternFilter::Any => ANY,
                PatternFilter::Match => MATCH,
                PatternFilter::Exactly(p) => p.code(),
            })
            .with_principal_filter(f.principal.as_deref().map(s))
            .with_host_filter(f.host.as_deref().map(s))
            .with_operation(f.operation.map_or(ANY, |o| o.code()))
            .with_permission_type(f.permission.map_or(ANY, |p| p.code()))
    }};
}

/// A binding from the wire codes of an answer; `None` for codes this
/// client does not know.
#[allow(clippy::too_many_arguments)]
fn binding(
    rt: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    host: &str,
    op: i8,
    permission: i8,
) -> Option<AclBinding> {
    AclBinding::from_wire(rt, name, pattern, principal, host, op, permission).ok()
}

impl Client {
    /// Creates ACLs; one outcome per binding, in order.
    pub async fn create_acls(
        &self,
        acls: &[AclBinding],
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let conn = self.admin_conn().await?;
        let req = CreateAclsRequest::default().with_creations(
            acls.iter()
                .map(|b| {
                    AclCreation::default()
                        .with_resource_type(b.resource_type.code())
                        .with_resource_name(s(&b.resource_name))
                        .with_resource_pattern_type(b.pattern_type.code())
                        .with_principal(s(&b.principal))
                        .with_host(s(&b.host))
                        .with_operation(b.operation.code())
                        .with_permission_type(b.permission.code())
                })
                .collect(),
        );
        let resp = conn.send(&req).await?;
        Ok(resp
            .results
            .iter()
            .zip(acls)
            .map(|(r, b)| {
                error::check(
                    r.error_code,
                    "create ACL",
                    || format!("{b:?}"),
                    r.error_message.as_deref(),
                )
            })
            .collect())
    }

    /// The ACLs a filter matches.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, ClientError> {
        let conn = self.admin_conn().await?;
        let req = with_filter!(DescribeAclsRequest::default(), filter);
        let resp = conn.send(&req).await?;
        error::check(
            resp.error_code,
            "describe ACLs",
            String::new,
            resp.error_message.as_deref(),
        )?;
        Ok(resp
            .resources
            .iter()
            .flat_map(|r| {
                r.acls.iter().filter_map(|a| {
                    binding(
                        r.resource_type,
                        &r.resource_name,
                        r.pattern_type,
                        &a.principal,
                        &a.host,
                        a.operation,
                        a.permission_type,
                    )
                })
            })
            .collect())
    }

    /// Deletes the ACLs each filter matches; per filter, the ACLs deleted.
    pub async fn delete_acls(
        &self,
        filters: &[AclFilter],
    ) -> Result<Vec<Result<Vec<AclBinding>, ClientError>>, ClientError> {
        let conn = self.admin_conn().await?;
        let req = DeleteAclsRequest::default().with_filters(
            filters
                .iter()
                .map(|f| with_filter!(DeleteAclsFilter::default(), f))
                .collect(),
        );
        let resp = conn.send(&req).await?;
        Ok(resp
            .filter_results
            .iter()
            .map(|r| {
                error::check(
                    r.error_code,
                    "delete ACLs",
                    String::new,
                    r.error_message.as_deref(),
                )?;
                Ok(r.matching_acls
                    .iter()
                    .filter_map(|a| {
                        binding(
                            a.resource_type,
                            &a.resource_name,
                            a.pattern_type,
                            &a.principal,
                            &a.host,
                            a.operation,
                            a.permission_type,
                        )
                    })
                    .collect())
            })
            .collect())
    }
}
