//! `strata acl add|list|remove`: ACLs in cluster metadata (CreateAcls,
//! DescribeAcls, DeleteAcls), in the terms of Kafka's `kafka-acls` tool.

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, print_str, Columns};
use super::{usage, ConnectArgs, Output};
use crate::security::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
    CLUSTER_NAME,
};

#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    #[command(subcommand)]
    cmd: AclCommand,
}

/// The resource an ACL names: exactly one of these.
#[derive(Args, Debug, Clone, Default)]
struct Resource {
    /// A topic (`*` for every topic)
    #[arg(long, conflicts_with_all = ["group", "cluster", "transactional_id"])]
    topic: Option<String>,
    /// A consumer group (`*` for every group)
    #[arg(long, conflicts_with_all = ["cluster", "transactional_id"])]
    group: Option<String>,
    /// The cluster
    #[arg(long, conflicts_with = "transactional_id")]
    cluster: bool,
    /// A transactional id (`*` for every one)
    #[arg(long)]
    transactional_id: Option<String>,
    /// The name is a prefix: the ACL covers every resource whose name starts with it
    #[arg(long)]
    prefixed: bool,
}

impl Resource {
    fn get(&self) -> Option<(ResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((ResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((ResourceType::Group, g.clone()))
        } else if self.cluster {
            Some((ResourceType::Cluster, CLUSTER_NAME.to_string()))
        } else {
            self.transactional_id
                .as_ref()
                .map(|t| (ResourceType::TransactionalId, t.clone()))
        }
    }

    fn pattern(&self) -> PatternType {
        if self.prefixed {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        }
    }
}

fn operation(s: &str) -> Result<Operation, String> {
    Operation::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Operation::ALL_VALUES.iter().map(|o| o.name()).collect();
        format!("unknown operation {s:?}; one of {}", names.join(", "))
    })
}

#[derive(Subcommand, Debug)]
enum AclCommand {
    /// Allow (or with --deny, deny) a principal operations on a resource
    Add {
        /// Who: TYPE:NAME, such as User:alice (User:* for everyone)
        #[arg(long)]
        principal: String,
        /// What (repeat for several): READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALL
        #[arg(long = "operation", required = true, value_parser = operation)]
        operations: Vec<Operation>,
        #[command(flatten)]
        resource: Resource,
        /// The client address the ACL applies to
        #[arg(long, default_value = "*")]
        host: String,
        /// Deny instead of allow (a DENY wins over any ALLOW)
        #[arg(long)]
        deny: bool,
    },
    /// List ACLs, all or those of a resource or principal
    List {
        /// Only this principal's
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: Resource,
    },
    /// Remove the ACLs that match (give a resource, a principal or both)
    Remove {
        /// Only this principal's
        #[arg(long)]
        principal: Option<String>,
        /// Only these operations (repeat for several) [default: every one]
        #[arg(long = "operation", value_parser = operation)]
        operations: Vec<Operation>,
        #[command(flatten)]
        resource: Resource,
        /// Only ACLs for this host
        #[arg(long)]
        host: Option<String>,
        /// Only DENY ACLs
        #[arg(long, conflicts_with = "allow")]
        deny: bool,
        /// Only ALLOW ACLs
        #[arg(long)]
        allow: bool,
    },
}

fn filter(principal: Option<String>, resource: &Resource) -> AclFilter {
    let named = resource.get();
    AclFilter {
        resource_type: named.as_ref().map(|(t, _)| *t),
        resource_name: named.map(|(_, n)| n),
        pattern: PatternFilter::Exactly(resource.pattern()),
        principal,
        host: None,
        operation: None,
        permission: None,
    }
}

fn as_json(b: &AclBinding) -> serde_json::Value {
    json!({
        "resource_type": b.resource_type.name(),
        "resource_name": b.resource_name,
        "pattern_type": b.pattern_type.name(),
        "principal": b.principal,
        "host": b.host,
        "operation": b.operation.name(),
        "permission": b.permission.name(),
    })
}

fn print(acls: &[AclBinding], out: Output, none: &str) -> anyhow::Result<()> {
    match out {
        Output::Json => print_json(&json!(acls.iter().map(as_json).collect::<Vec<_>>())),
        Output::Table => {
            if acls.is_empty() {
                return print_str(none);
            }
            let mut c = Columns::new(&[
                "RESOURCE",
                "NAME",
                "PATTERN",
                "PRINCIPAL",
                "HOST",
                "OPERATION",
                "PERMISSION",
            ]);
            for b in acls {
                c.row([
                    b.resource_type.name().to_string(),
                    b.resource_name.clone(),
                    b.pattern_type.name().to_string(),
                    b.principal.clone(),
                    b.host.clone(),
                    b.operation.name().to_string(),
                    b.permission.name().to_string(),
                ]);
            }
            c.print()
        }
    }
}

pub async fn run(args: AclArgs) -> anyhow::Result<()> {
    let out = args.conn.output;
    match args.cmd {
        AclCommand::Add {
            principal,
            operations,
            resource,
            host,
            deny,
        } => {
            let Some((rt, name)) = resource.get() else {
                return Err(usage(
                    "name the resource: --topic, --group, --cluster or --transactional-id",
                ));
            };
            let permission = if deny {
                Permission::Deny
            } else {
                Permission::Allow
            };
            let acls = operations
                .iter()
                .map(|op| {
                    AclBinding::from_wire(
                        rt.code(),
                        &name,
                        resource.pattern().code(),
                        &principal,
                        &host,
                        op.code(),
                        permission.code(),
                    )
                    .map_err(usage)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let client = args.conn.connect().await?;
            let results = client.create_acls(&acls).await?;
            let mut added = Vec::new();
            for (b, r) in acls.into_iter().zip(results) {
                r?;
                added.push(b);
            }
            print(&added, out, "")
        }
        AclCommand::List {
            principal,
            resource,
        } => {
            let mut f = filter(principal, &resource);
            if resource.get().is_none() {
                f.pattern = PatternFilter::Any;
            }
            let client = args.conn.connect().await?;
            print(&client.describe_acls(&f).await?, out, "no ACLs\n")
        }
        AclCommand::Remove {
            principal,
            operations,
            resource,
            host,
            deny,
            allow,
        } => {
            if resource.get().is_none() && principal.is_none() {
                return Err(usage(
                    "give a resource (--topic, --group, --cluster, --transactional-id), --principal or both",
                ));
            }
            let mut base = filter(principal, &resource);
            if resource.get().is_none() {
                base.pattern = PatternFilter::Any;
            }
            base.host = host;
            base.permission = match (deny, allow) {
                (true, _) => Some(Permission::Deny),
                (_, true) => Some(Permission::Allow),
                _ => None,
            };
            let filters: Vec<AclFilter> = if operations.is_empty() {
                vec![base]
            } else {
                operations
                    .iter()
                    .map(|op| AclFilter {
                        operation: Some(*op),
                        ..base.clone()
                    })
                    .collect()
            };
            let client = args.conn.connect().await?;
            let mut removed = Vec::new();
            for r in client.delete_acls(&filters).await? {
                removed.extend(r?);
            }
            print(&removed, out, "no ACLs matched\n")
        }
    }
}
