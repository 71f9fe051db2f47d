//! ACLs with Kafka's model, and the authorizer that reads them.
//!
//! An [`AclBinding`] names a resource pattern (type, name, LITERAL or
//! PREFIXED) and an entry (principal, host, operation, ALLOW or DENY). The
//! bindings live in cluster metadata (`ClusterView::acls`), changed by
//! CreateAcls and DeleteAcls through the raft log, so every broker
//! authorizes against the same set.
//!
//! [`Authorizer::authorize`] decides one operation on one resource the way
//! Kafka's standard authorizer does:
//! - a principal listed in `--super-users` may do anything;
//! - the bindings that apply are those whose pattern matches the resource
//!   (a LITERAL name equal to it or `*`, or a PREFIXED name it starts with)
//!   and whose principal (or `User:*`) and host (or `*`) match the caller;
//! - a DENY for the operation (or ALL) wins over any ALLOW;
//! - an ALLOW for the operation (or ALL) allows it; READ, WRITE, DELETE and
//!   ALTER imply DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS;
//! - when no binding at all matches the resource, the answer is
//!   `--allow-everyone-if-no-acl-found` (default false).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL resource name, principal or host that matches every one.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Defines a Kafka enum with its wire codes and names.
macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant),*];

            /// The Kafka wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code),* }
            }

            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name, as its tools print and take it.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Parses Kafka's name, in any case, with `-` or `_`.
            pub fn parse(s: &str) -> Option<$name> {
                let s = s.to_ascii_uppercase().replace('-', "_");
                Self::ALL_VALUES.iter().copied().find(|v| v.name() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What a binding protects.
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

kafka_enum!(
    /// How a binding's resource name matches.
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// What a binding allows or denies.
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    /// ALLOW or DENY.
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// The wire code of ANY in every ACL enum (filters only).
pub const ANY: i8 = 1;
/// The wire code of MATCH in a pattern-type filter.
pub const MATCH: i8 = 2;

/// One ACL: who may (or may not) do what to which resources.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// A binding from CreateAcls' wire fields, checked as Kafka checks
    /// them; the error says which field is wrong.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        resource_name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<AclBinding, String> {
        let resource_type = ResourceType::from_code(resource_type)
            .ok_or_else(|| format!("invalid resource type. resource_type={resource_type}"))?;
        let pattern_type = PatternType::from_code(pattern_type).ok_or_else(|| {
            format!("pattern type must be LITERAL or PREFIXED. pattern_type={pattern_type}")
        })?;
        let operation = Operation::from_code(operation)
            .ok_or_else(|| format!("invalid operation. operation={operation}"))?;
        let permission = Permission::from_code(permission).ok_or_else(|| {
            format!("permission must be ALLOW or DENY. permission_type={permission}")
        })?;
        if resource_name.is_empty() {
            return Err("resource name must not be empty".into());
        }
        if resource_type == ResourceType::Cluster
            && (resource_name != CLUSTER_NAME || pattern_type != PatternType::Literal)
        {
            return Err(format!(
                "the only CLUSTER resource is the LITERAL {CLUSTER_NAME}. resource_name={resource_name}"
            ));
        }
        if pattern_type == PatternType::Prefixed && resource_name == WILDCARD {
            return Err("a PREFIXED pattern cannot be the wildcard '*'; use LITERAL '*'".into());
        }
        match principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal must be TYPE:NAME, such as User:alice. principal={principal}"
                ))
            }
        }
        if host.is_empty() {
            return Err("host must be an address or '*'".into());
        }
        Ok(AclBinding {
            resource_type,
            resource_name: resource_name.to_string(),
            pattern_type,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        })
    }

    /// Whether this binding's pattern covers the resource `rt`/`name`.
    fn covers(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(self.resource_name.as_str()),
            }
    }

    /// Whether this binding's entry applies to the caller.
    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
    }
}

/// How a filter matches pattern types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    /// Any pattern type; a name must be equal.
    Any,
    /// The bindings that would apply to the named resource.
    Match,
    Exactly(PatternType),
}

/// DescribeAcls' and DeleteAcls' filter: `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// A filter from the wire fields; ANY (1) leaves a field open.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        fn open<T>(code: i8, parse: fn(i8) -> Option<T>, what: &str) -> Result<Option<T>, String> {
            if code == ANY {
                return Ok(None);
            }
            parse(code)
                .map(Some)
                .ok_or_else(|| format!("invalid {what} filter. {what}={code}"))
        }
        let pattern = match pattern_type {
            ANY => PatternFilter::Any,
            MATCH => PatternFilter::Match,
            c => PatternFilter::Exactly(
                PatternType::from_code(c)
                    .ok_or_else(|| format!("invalid pattern type filter. pattern_type={c}"))?,
            ),
        };
        Ok(AclFilter {
            resource_type: open(resource_type, ResourceType::from_code, "resource_type")?,
            resource_name: resource_name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: open(operation, Operation::from_code, "operation")?,
            permission: open(permission, Permission::from_code, "permission_type")?,
        })
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type) {
            return false;
        }
        let name_ok = match (&self.resource_name, self.pattern) {
            (None, PatternFilter::Exactly(p)) => p == b.pattern_type,
            (None, _) => true,
            (Some(n), PatternFilter::Any) => *n == b.resource_name,
            (Some(n), PatternFilter::Exactly(p)) => p == b.pattern_type && *n == b.resource_name,
            (Some(n), PatternFilter::Match) => b.covers(b.resource_type, n),
        };
        name_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// The operations an allowed `op` implies.
fn implied_by(op: Operation) -> &'static [Operation] {
    match op {
        Operation::Describe => &[
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::Alter,
        ],
        Operation::DescribeConfigs => &[Operation::AlterConfigs],
        _ => &[],
    }
}

/// The authorizer's settings (`--authorizer`, `--super-users`,
/// `--allow-everyone-if-no-acl-found`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authorizer {
    pub super_users: BTreeSet<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl Authorizer {
    /// Whether `principal` connecting from `host` may do `op` on the
    /// resource `rt`/`name`, given the cluster's `acls`.
    pub fn authorize<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a AclBinding>,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let mut any = false;
        let mut allowed = false;
        for b in acls.into_iter().filter(|b| b.covers(rt, name)) {
            any = true;
            if !b.applies_to(principal, host) {
                continue;
            }
            let exact = b.operation == op || b.operation == Operation::All;
            match b.permission {
                Permission::Deny if exact => return false,
                Permission::Allow if exact || implied_by(op).contains(&b.operation) => {
                    allowed = true
                }
                _ => {}
            }
        }
        if any {
            allowed
        } else {
            self.allow_everyone_if_no_acl_found
        }
    }

    /// Whether `principal` may do `op` on at least one resource of type
    /// `rt` (Kafka's authorizeByResourceType, used where an operation on
    /// any topic is enough): an ALLOW for it that no DENY of a wider
    /// pattern cancels, or no binding of the type at all with
    /// `allow_everyone_if_no_acl_found`.
    pub fn authorize_any<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a AclBinding> + Clone,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let of_type = || acls.clone().into_iter().filter(|b| b.resource_type == rt);
        if of_type().next().is_none() {
            return self.allow_everyone_if_no_acl_found;
        }
        let applying = || {
            of_type().filter(|b| {
                b.applies_to(principal, host)
                    && (b.operation == op || b.operation == Operation::All)
            })
        };
        applying()
            .filter(|b| b.permission == Permission::Allow)
            .any(|allow| {
                !applying().any(|deny| {
                    deny.permission == Permission::Deny
                        && match deny.pattern_type {
                            PatternType::Literal => {
                                deny.resource_name == WILDCARD
                                    || (allow.pattern_type == PatternType::Literal
                                        && deny.resource_name == allow.resource_name)
                            }
                            PatternType::Prefixed => {
                                allow.resource_name.starts_with(deny.resource_name.as_str())
                            }
                        }
                })
            })
    }

    /// The subset of `ops` the principal may do on the resource, as the
    /// bits of an authorized-operations field.
    pub fn authorized_operations<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a AclBinding> + Clone,
        principal: &str,
        host: &str,
        rt: ResourceType,
        name: &str,
        ops: &[Operation],
    ) -> i32 {
        ops.iter()
            .filter(|op| self.authorize(acls.clone(), principal, host, **op, rt, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission,
        }
    }

    fn strict() -> Authorizer {
        Authorizer::default()
    }

    #[test]
    fn nothing_is_allowed_without_an_acl_unless_configured() {
        let a = strict();
        assert!(!a.authorize(
            &[],
            "User:alice",
            "1.2.3.4",
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        let open = Authorizer {
            allow_everyone_if_no_acl_found: true,
            ..Authorizer::default()
        };
        assert!(open.authorize(
            &[],
            "User:alice",
            "1.2.3.4",
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        // An ACL on the resource for someone else closes it for alice.
        let acls = [binding(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:bob",
            Operation::Read,
            Permission::Allow,
        )];
        assert!(!open.authorize(
            &acls,
            "User:alice",
            "h",
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(open.authorize(
            &acls,
            "User:alice",
            "h",
            Operation::Read,
            ResourceType::Topic,
            "u"
        ));
    }

    #[test]
    fn super_users_may_do_anything() {
        let a = Authorizer {
            super_users: ["User:admin".to_string()].into(),
            ..Authorizer::default()
        };
        let deny = [binding(
            ResourceType::Topic,
            "*",
            PatternType::Literal,
            "User:*",
            Operation::All,
            Permission::Deny,
        )];
        assert!(a.authorize(
            &deny,
            "User:admin",
            "h",
            Operation::Write,
            ResourceType::Topic,
            "t"
        ));
        assert!(!a.authorize(
            &deny,
            "User:bob",
            "h",
            Operation::Write,
            ResourceType::Topic,
            "t"
        ));
    }

    #[test]
    fn literal_wildcard_and_prefixed_patterns() {
        let a = strict();
        let acls = [
            binding(
                ResourceType::Topic,
                "orders-",
                PatternType::Prefixed,
                "User:alice",
                Operation::Write,
                Permission::Allow,
            ),
            binding(
                ResourceType::Group,
                "*",
                PatternType::Literal,
                "User:alice",
                Operation::Read,
                Permission::Allow,
            ),
        ];
        let can = |op, rt, name| a.authorize(&acls, "User:alice", "h", op, rt, name);
        assert!(can(Operation::Write, ResourceType::Topic, "orders-eu"));
        assert!(!can(Operation::Write, ResourceType::Topic, "order"));
        assert!(!can(Operation::Read, ResourceType::Topic, "orders-eu"));
        assert!(can(Operation::Read, ResourceType::Group, "anything"));
        // A LITERAL "*" is not a prefix of everything: it is the wildcard.
        assert!(!can(Operation::Read, ResourceType::Topic, "*"));
    }

    #[test]
    fn deny_wins_and_implied_operations() {
        let a = strict();
        let acls = [
            binding(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:*",
                Operation::All,
                Permission::Allow,
            ),
            binding(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:eve",
                Operation::Write,
                Permission::Deny,
            ),
            binding(
                ResourceType::Topic,
                "c",
                PatternType::Literal,
                "User:eve",
                Operation::AlterConfigs,
                Permission::Allow,
            ),
        ];
        let can = |p, op, name| a.authorize(&acls, p, "h", op, ResourceType::Topic, name);
        assert!(can("User:bob", Operation::Write, "t"));
        assert!(!can("User:eve", Operation::Write, "t"));
        assert!(can("User:eve", Operation::Read, "t"));
        // READ implies DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS only.
        assert!(can("User:eve", Operation::Describe, "t"));
        assert!(can("User:eve", Operation::DescribeConfigs, "c"));
        assert!(!can("User:eve", Operation::Describe, "c"));
    }

    #[test]
    fn hosts_must_match() {
        let a = strict();
        let mut b = binding(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        b.host = "10.0.0.1".into();
        let acls = [b];
        assert!(a.authorize(
            &acls,
            "User:a",
            "10.0.0.1",
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(!a.authorize(
            &acls,
            "User:a",
            "10.0.0.2",
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
    }

    #[test]
    fn any_topic_write_is_enough_unless_denied_wider() {
        let a = strict();
        let allow = binding(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:a",
            Operation::Write,
            Permission::Allow,
        );
        let any = |acls: &[AclBinding]| {
            a.authorize_any(acls, "User:a", "h", Operation::Write, ResourceType::Topic)
        };
        assert!(any(std::slice::from_ref(&allow)));
        assert!(!any(&[]));
        let deny_all = binding(
            ResourceType::Topic,
            "*",
            PatternType::Literal,
            "User:a",
            Operation::Write,
            Permission::Deny,
        );
        assert!(!any(&[allow.clone(), deny_all]));
        let deny_prefix = binding(
            ResourceType::Topic,
            "",
            PatternType::Prefixed,
            "User:a",
            Operation::Write,
            Permission::Deny,
        );
        assert!(!any(&[allow.clone(), deny_prefix]));
        let deny_other = binding(
            ResourceType::Topic,
            "u",
            PatternType::Literal,
            "User:a",
            Operation::Write,
            Permission::Deny,
        );
        assert!(any(&[allow, deny_other]));
    }

    #[test]
    fn creation_is_validated() {
        let ok = AclBinding::from_wire(2, "t", 3, "User:a", "*", 3, 3).unwrap();
        assert_eq!(ok.operation, Operation::Read);
        for (rt, name, pt, principal, host, op, perm) in [
            (1, "t", 3, "User:a", "*", 3, 3),
            (2, "t", 2, "User:a", "*", 3, 3),
            (2, "t", 3, "alice", "*", 3, 3),
            (2, "t", 3, "User:a", "*", 1, 3),
            (2, "t", 3, "User:a", "*", 3, 1),
            (2, "", 3, "User:a", "*", 3, 3),
            (4, "other", 3, "User:a", "*", 3, 3),
            (2, "*", 4, "User:a", "*", 3, 3),
        ] {
            assert!(AclBinding::from_wire(rt, name, pt, principal, host, op, perm).is_err());
        }
    }

    #[test]
    fn filters_match_as_kafka_does() {
        let lit = binding(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let pre = binding(
            ResourceType::Topic,
            "ord",
            PatternType::Prefixed,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let f = |name: Option<&str>, pattern: i8| {
            AclFilter::from_wire(1, name, pattern, None, None, 1, 1).unwrap()
        };
        assert!(f(None, ANY).matches(&lit) && f(None, ANY).matches(&pre));
        assert!(f(Some("orders"), ANY).matches(&lit) && !f(Some("orders"), ANY).matches(&pre));
        assert!(f(Some("orders"), MATCH).matches(&lit) && f(Some("orders"), MATCH).matches(&pre));
        assert!(!f(None, 3).matches(&pre) && f(None, 4).matches(&pre));
        let by_principal = AclFilter::from_wire(1, None, 1, Some("User:b"), None, 1, 1).unwrap();
        assert!(!by_principal.matches(&lit));
        assert!(AclFilter::from_wire(9, None, 1, None, None, 1, 1).is_err());
    }

    proptest! {
        /// A DENY that applies always wins, whatever else is there.
        #[test]
        fn an_applying_deny_always_wins(
            ops in proptest::collection::vec(0usize..13, 0..8),
            op in 0usize..13,
        ) {
            let a = Authorizer { allow_everyone_if_no_acl_found: true, ..Authorizer::default() };
            let mut acls: Vec<AclBinding> = ops.iter().map(|i| binding(
                ResourceType::Topic, "t", PatternType::Literal, "User:a",
                Operation::ALL_VALUES[*i], Permission::Allow,
            )).collect();
            let op = Operation::ALL_VALUES[op];
            acls.push(binding(ResourceType::Topic, "t", PatternType::Prefixed, "User:*", op, Permission::Deny));
            prop_assert!(!a.authorize(&acls, "User:a", "h", op, ResourceType::Topic, "t"));
        }
    }
}
