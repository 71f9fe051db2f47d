//! The metadata state machine: a pure function from (view, command) to
//! (view', result). Deterministic (no clock, no randomness, no I/O), so every
//! replica that applies the same log reaches the same view and result.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{
    BrokerInfo, ClusterView, Command, CommandResult, Election, ElectionOutcome, PartitionInfo,
    ReassignOutcome, TopicInfo,
};

/// Largest partition count of one topic. Guards the state machine against a
/// command that would allocate without bound on every replica, forever.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// The replication factor of a topic created without one, at most: each
/// partition on min(3, running brokers) brokers.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;

/// Longest legal topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// The topic config (and dynamic broker config) that lets a partition
/// whose in-sync replicas are all down elect another live replica.
const UNCLEAN_ELECTION: &str = "unclean.leader.election.enable";

impl ClusterView {
    /// Applies `cmd`. An invalid command leaves the view unchanged and says
    /// why in the result.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::RegisterBroker(broker) => self.register_broker(broker),
            Command::CreateTopic {
                name,
                id,
                partitions,
                replication_factor,
                configs,
                assignments,
            } => self.create_topic(
                name,
                *id,
                *partitions,
                *replication_factor,
                configs,
                assignments.as_deref(),
            ),
            Command::DeleteTopic { id } => self.delete_topic(*id),
            Command::CreatePartitions {
                name,
                total_count,
                assignments,
            } => self.create_partitions(name, *total_count, assignments.as_deref()),
            Command::AlterTopicConfigs {
                name,
                set,
                delete,
                replace,
            } => self.alter_topic_configs(name, set, delete, *replace),
            Command::AllocateProducerIds { count } => self.allocate_producer_ids(*count),
            Command::InitCluster { cluster_id } => self.init_cluster(cluster_id),
            Command::FenceBroker { node_id } => self.fence_broker(*node_id, true),
            Command::UnfenceBroker { node_id } => self.fence_broker(*node_id, false),
            Command::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                isr,
            } => self.alter_partition(*topic_id, *partition, *leader, *leader_epoch, isr),
            Command::BrokerStarted { node_id } => self.broker_started(*node_id),
            Command::ControlledShutdown { node_id } => {
                let r = self.fence_broker(*node_id, true);
                if r == CommandResult::Ok {
                    self.shut_down.insert(*node_id);
                }
                r
            }
            Command::ElectLeaders {
                election,
                partitions,
            } => CommandResult::Elections {
                outcomes: partitions
                    .iter()
                    .map(|(id, p)| self.elect_leader(*election, *id, *p))
                    .collect(),
            },
            Command::Reassign { partitions } => CommandResult::Reassignments {
                outcomes: partitions
                    .iter()
                    .map(|(id, p, target)| self.reassign(*id, *p, target.as_deref()))
                    .collect(),
            },
            Command::AlterBrokerConfigs {
                set,
                delete,
                replace,
            } => {
                alter_map(&mut self.broker_configs, set, delete, *replace);
                CommandResult::Ok
            }
            Command::AlterScramCredentials { upserts, deletions } => {
                for (user, mechanism) in deletions {
                    if let Some(creds) = self.scram.get_mut(user) {
                        creds.remove(mechanism);
                        if creds.is_empty() {
                            self.scram.remove(user);
                        }
                    }
                }
                for (user, mechanism, credential) in upserts {
                    self.scram
                        .entry(user.clone())
                        .or_default()
                        .insert(*mechanism, credential.clone());
                }
                CommandResult::Ok
            }
            Command::CreateAcls { acls } => {
                self.acls.extend(acls.iter().cloned());
                CommandResult::Ok
            }
            Command::DeleteAcls { filters } => {
                let per_filter = filters
                    .iter()
                    .map(|f| {
                        let matched: Vec<_> =
                            self.acls.iter().filter(|b| f.matches(b)).cloned().collect();
                        for b in &matched {
                            self.acls.remove(b);
                        }
                        matched
                    })
                    .collect();
                CommandResult::AclsDeleted { per_filter }
            }
            Command::UnregisterBroker { node_id } => self.unregister_broker(*node_id),
        }
    }

    /// Removes a stopped broker that hosts no replica (replicas joining
    /// or leaving by reassignment count as hosted).
    fn unregister_broker(&mut self, node_id: i32) -> CommandResult {
        if !self.brokers.contains_key(&node_id) {
            return CommandResult::BrokerNotRegistered;
        }
        if !self.fenced.contains(&node_id) {
            return CommandResult::BrokerStillHosting {
                reason: format!(
                    "the broker is running (unfenced); stop it first. node_id={node_id}"
                ),
            };
        }
        let hosted = self
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&node_id))
            .count();
        if hosted > 0 {
            return CommandResult::BrokerStillHosting {
                reason: format!(
                    "the broker still hosts replicas; drain it first. node_id={node_id}, replicas={hosted}"
                ),
            };
        }
        self.brokers.remove(&node_id);
        self.fenced.remove(&node_id);
        self.shut_down.remove(&node_id);
        self.unregistered.insert(node_id);
        CommandResult::Ok
    }

    fn register_broker(&mut self, broker: &BrokerInfo) -> CommandResult {
        if broker.node_id < 0 {
            return invalid_request(format!(
                "broker id must not be negative. node_id={}",
                broker.node_id
            ));
        }
        if !(0..=65535).contains(&broker.port) {
            return invalid_request(format!("broker port out of range. port={}", broker.port));
        }
        self.brokers.insert(broker.node_id, broker.clone());
        // A broker that registers is running.
        self.fenced.remove(&broker.node_id);
        self.shut_down.remove(&broker.node_id);
        self.unregistered.remove(&broker.node_id);
        CommandResult::Ok
    }

    /// Fences (or unfences) a registered broker: a fenced broker is left out
    /// of placement and of the brokers clients are told about.
    fn fence_broker(&mut self, node_id: i32, fence: bool) -> CommandResult {
        if !self.brokers.contains_key(&node_id) {
            return invalid_request(format!("unknown broker. node_id={node_id}"));
        }
        if fence {
            self.fenced.insert(node_id);
        } else {
            self.fenced.remove(&node_id);
        }
        let fenced = self.fenced.clone();
        for (p, unclean) in self.replicated_partitions_mut() {
            if fence {
                // It leaves the ISRs where another member remains; the
                // partitions it led move to another live member, or have
                // no leader (its ISR kept, so it leads again when back).
                if p.isr.len() > 1 {
                    p.isr.retain(|b| *b != node_id);
                }
                if p.leader == node_id {
                    elect(p, &fenced, None, unclean);
                }
            } else if p.leader < 0 && (p.isr.contains(&node_id) || unclean) {
                elect(p, &fenced, None, unclean);
            }
        }
        CommandResult::Ok
    }

    /// Partitions with more than one replica, the ones elections move,
    /// each with whether its topic allows an unclean election
    /// (`unclean.leader.election.enable`: the topic's, else the dynamic
    /// broker config's, else false).
    fn replicated_partitions_mut(&mut self) -> impl Iterator<Item = (&mut PartitionInfo, bool)> {
        let is_true = |v: Option<&String>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let broker_unclean = is_true(self.broker_configs.get(UNCLEAN_ELECTION));
        self.topics.values_mut().flat_map(move |t| {
            let unclean = match t.configs.get(UNCLEAN_ELECTION) {
                Some(v) => is_true(Some(v)),
                None => broker_unclean,
            };
            t.partitions
                .iter_mut()
                .filter(|p| p.replicas.len() > 1)
                .map(move |p| (p, unclean))
        })
    }

    fn broker_started(&mut self, node_id: i32) -> CommandResult {
        if !self.brokers.contains_key(&node_id) {
            return invalid_request(format!("unknown broker. node_id={node_id}"));
        }
        self.shut_down.remove(&node_id);
        let fenced = self.fenced.clone();
        for (p, unclean) in self.replicated_partitions_mut() {
            if p.leader == node_id {
                // Another live member if there is one; else itself again,
                // at a new epoch.
                elect(p, &fenced, Some(node_id), unclean);
            }
        }
        CommandResult::Ok
    }

    /// The partitions a leader rebalance moves back to their preferred
    /// replica (Kafka's auto.leader.rebalance): for each broker whose
    /// share of its preferred leaderships that another replica holds is
    /// above `percentage`, those of them where it is a live in-sync
    /// replica.
    pub fn imbalanced_leaders(&self, percentage: u32) -> Vec<(Uuid, i32)> {
        let mut preferred: BTreeMap<i32, (usize, Vec<(Uuid, i32)>)> = BTreeMap::new();
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(&first) = p.replicas.first() else {
                    continue;
                };
                let entry = preferred.entry(first).or_default();
                entry.0 += 1;
                if p.leader != first && p.isr.contains(&first) && !self.fenced.contains(&first) {
                    entry.1.push((t.id, i as i32));
                }
            }
        }
        preferred
            .into_values()
            .filter(|(total, movable)| movable.len() * 100 > *total * percentage as usize)
            .flat_map(|(_, movable)| movable)
            .collect()
    }

    /// Partition `index` of the topic with id `topic_id`.
    fn partition_mut(&mut self, topic_id: Uuid, index: i32) -> Option<&mut PartitionInfo> {
        let name = self.topic_names_by_id.get(&topic_id)?;
        self.topics
            .get_mut(name)?
            .partitions
            .get_mut(usize::try_from(index).ok()?)
    }

    fn elect_leader(&mut self, election: Election, topic_id: Uuid, index: i32) -> ElectionOutcome {
        let fenced = self.fenced.clone();
        let Some(p) = self.partition_mut(topic_id, index) else {
            return ElectionOutcome::UnknownPartition;
        };
        match election {
            Election::Preferred => {
                let preferred = p.replicas[0];
                if p.leader == preferred {
                    ElectionOutcome::NotNeeded
                } else if !p.isr.contains(&preferred) || fenced.contains(&preferred) {
                    ElectionOutcome::NotAvailable
                } else {
                    p.leader = preferred;
                    p.leader_epoch += 1;
                    ElectionOutcome::Elected
                }
            }
            Election::Unclean if p.leader >= 0 => ElectionOutcome::NotNeeded,
            Election::Unclean => match p.replicas.iter().find(|b| !fenced.contains(b)) {
                Some(&b) => {
                    p.leader = b;
                    p.leader_epoch += 1;
                    p.isr = vec![b];
                    ElectionOutcome::Elected
                }
                None => ElectionOutcome::NotAvailable,
            },
        }
    }

    fn alter_partition(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        isr: &[i32],
    ) -> CommandResult {
        let fenced = self.fenced.clone();
        let Some(p) = self.partition_mut(topic_id, partition) else {
            return CommandResult::UnknownTopic;
        };
        if p.leader != leader || p.leader_epoch != leader_epoch {
            return invalid_request(format!(
                "not the partition's current leader. leader={leader}, leader_epoch={leader_epoch}, current_leader={}, current_epoch={}",
                p.leader, p.leader_epoch
            ));
        }
        if !isr.contains(&leader) || isr.iter().any(|b| !p.replicas.contains(b)) {
            return invalid_request(format!(
                "the ISR must hold the leader and only replicas. isr={isr:?}, replicas={:?}",
                p.replicas
            ));
        }
        if let Some(b) = isr
            .iter()
            .find(|b| !p.isr.contains(b) && fenced.contains(b))
        {
            return invalid_request(format!("a fenced broker cannot join the ISR. broker={b}"));
        }
        // In replica order, so elections read it in that order.
        p.isr = p
            .replicas
            .iter()
            .copied()
            .filter(|b| isr.contains(b))
            .collect();
        complete_reassignment(p, &fenced);
        CommandResult::Ok
    }

    fn reassign(&mut self, topic_id: Uuid, index: i32, target: Option<&[i32]>) -> ReassignOutcome {
        if let Some(t) = target {
            if let Err(reason) = self.check_target(t) {
                return ReassignOutcome::InvalidReplicaAssignment { reason };
            }
        }
        let fenced = self.fenced.clone();
        let Some(p) = self.partition_mut(topic_id, index) else {
            return ReassignOutcome::UnknownPartition;
        };
        let original = p.original_replicas();
        match target {
            None if !p.is_reassigning() => ReassignOutcome::NoReassignmentInProgress,
            None => {
                // Back to the original replicas; the ones that were joining
                // leave, and lead no more.
                p.isr.retain(|b| original.contains(b));
                p.replicas = original;
                p.adding.clear();
                p.removing.clear();
                if !p.replicas.contains(&p.leader) {
                    elect(p, &fenced, None, false);
                }
                ReassignOutcome::Done
            }
            Some(t) => {
                let adding: Vec<i32> = t
                    .iter()
                    .copied()
                    .filter(|b| !original.contains(b))
                    .collect();
                let removing: Vec<i32> = original
                    .iter()
                    .copied()
                    .filter(|b| !t.contains(b))
                    .collect();
                let mut replicas = t.to_vec();
                replicas.extend(&removing);
                // Joining replicas that already left the ISR (a replaced
                // reassignment) are out of it.
                p.isr.retain(|b| replicas.contains(b));
                p.replicas = replicas;
                p.adding = adding;
                p.removing = removing;
                complete_reassignment(p, &fenced);
                ReassignOutcome::Done
            }
        }
    }

    /// Kafka's rules for a reassignment's target: at least one replica,
    /// registered brokers, none twice.
    fn check_target(&self, target: &[i32]) -> Result<(), String> {
        if target.is_empty() {
            return Err("the target replicas are empty".to_string());
        }
        if let Some(b) = target.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(format!(
                "the target names a broker that is not registered. broker={b}"
            ));
        }
        if let Some((_, b)) = target
            .iter()
            .enumerate()
            .find(|(j, b)| target[..*j].contains(b))
        {
            return Err(format!("the target names a broker twice. broker={b}"));
        }
        Ok(())
    }

    /// Registered brokers that are not fenced, by id: where new replicas go.
    pub fn live_brokers(&self) -> Vec<i32> {
        self.brokers
            .keys()
            .filter(|b| !self.fenced.contains(b))
            .copied()
            .collect()
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
        assignments: Option<&[Vec<i32>]>,
    ) -> CommandResult {
        if let Err(reason) = validate_topic_name(name) {
            return CommandResult::InvalidTopic { reason };
        }
        if self.topics.contains_key(name) || self.topic_names_by_id.contains_key(&id) {
            return CommandResult::TopicAlreadyExists;
        }
        if let Some(other) = self.colliding_topic(name) {
            return CommandResult::InvalidTopic {
                reason: format!(
                    "topic name collides with an existing topic ('.' and '_' are equivalent). name={name}, existing={other}"
                ),
            };
        }
        if id.is_nil() {
            return invalid_request(format!("topic id must not be nil. name={name}"));
        }
        let partitions = match assignments {
            Some(a) => match self.explicit_partitions(a, None) {
                Ok(placed) => placed,
                Err(result) => return result,
            },
            None => {
                if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
                    return CommandResult::InvalidPartitions {
                        reason: format!(
                            "number of partitions out of range. partitions={partitions}, min=1, max={MAX_PARTITIONS_PER_TOPIC}"
                        ),
                    };
                }
                let rf = match self.replication_factor(replication_factor) {
                    Ok(rf) => rf,
                    Err(result) => return result,
                };
                let brokers = self.live_brokers();
                (0..partitions)
                    .map(|p| assign_partition(&brokers, id, p, rf))
                    .collect()
            }
        };
        self.topics.insert(
            name.to_string(),
            TopicInfo {
                name: name.to_string(),
                id,
                partitions,
                configs: configs.clone(),
            },
        );
        self.topic_names_by_id.insert(id, name.to_string());
        CommandResult::Ok
    }

    /// Checks a requested replication factor against the running brokers;
    /// -1 is the default, min(3, running brokers).
    fn replication_factor(&self, requested: i16) -> Result<usize, CommandResult> {
        if requested == -1 {
            return Ok(self
                .live_brokers()
                .len()
                .clamp(1, DEFAULT_REPLICATION_FACTOR));
        }
        if requested < 1 {
            return Err(CommandResult::InvalidReplicationFactor {
                reason: format!(
                    "replication factor must be at least 1. replication_factor={requested}"
                ),
            });
        }
        let rf = usize::from(requested.unsigned_abs());
        let live = self.live_brokers().len();
        if rf > live {
            return Err(CommandResult::InvalidReplicationFactor {
                reason: format!(
                    "replication factor larger than the running brokers. replication_factor={requested}, brokers={live}"
                ),
            });
        }
        Ok(rf)
    }

    /// An existing topic whose name equals `name` once '.' and '_' are
    /// treated alike (Kafka rejects these: their metric names collide).
    fn colliding_topic(&self, name: &str) -> Option<&str> {
        let normalized = name.replace('.', "_");
        self.topics
            .keys()
            .find(|existing| existing.replace('.', "_") == normalized)
            .map(String::as_str)
    }

    fn delete_topic(&mut self, id: Uuid) -> CommandResult {
        match self.topic_names_by_id.remove(&id) {
            Some(name) => {
                self.topics.remove(&name);
                CommandResult::Ok
            }
            None => CommandResult::UnknownTopic,
        }
    }

    fn create_partitions(
        &mut self,
        name: &str,
        total_count: i32,
        assignments: Option<&[Vec<i32>]>,
    ) -> CommandResult {
        let Some(topic) = self.topics.get(name) else {
            return CommandResult::UnknownTopic;
        };
        let current = topic.partitions.len();
        let requested = usize::try_from(total_count).unwrap_or(0);
        if requested == current {
            return CommandResult::InvalidPartitions {
                reason: format!(
                    "topic already has the requested partitions. name={name}, partitions={current}"
                ),
            };
        }
        if requested < current {
            return CommandResult::InvalidPartitions {
                reason: format!(
                    "partitions can only grow. name={name}, current={current}, requested={total_count}"
                ),
            };
        }
        if total_count > MAX_PARTITIONS_PER_TOPIC {
            return CommandResult::InvalidPartitions {
                reason: format!(
                    "number of partitions out of range. partitions={total_count}, max={MAX_PARTITIONS_PER_TOPIC}"
                ),
            };
        }
        let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
        let id = topic.id;
        // `current` and `total_count` are both <= MAX_PARTITIONS_PER_TOPIC.
        let first_new = i32::try_from(current).unwrap_or(i32::MAX);
        let added: Vec<PartitionInfo> = match assignments {
            Some(a) if a.len() != requested - current => {
                return CommandResult::InvalidReplicaAssignment {
                    reason: format!(
                        "the assignments must name exactly the new partitions. name={name}, new_partitions={}, assignments={}",
                        requested - current,
                        a.len()
                    ),
                }
            }
            Some(a) => match self.explicit_partitions(a, Some(rf)) {
                Ok(placed) => placed,
                Err(result) => return result,
            },
            None => {
                let brokers = self.live_brokers();
                if rf > brokers.len() {
                    return CommandResult::InvalidReplicationFactor {
                        reason: format!(
                            "replication factor larger than the running brokers. name={name}, replication_factor={rf}, brokers={}",
                            brokers.len()
                        ),
                    };
                }
                (first_new..total_count)
                    .map(|p| assign_partition(&brokers, id, p, rf))
                    .collect()
            }
        };
        if let Some(topic) = self.topics.get_mut(name) {
            topic.partitions.extend(added);
        }
        CommandResult::Ok
    }

    /// Partitions placed as explicit replica assignments name them (Kafka's
    /// rules): at least one partition, each on registered brokers without
    /// repeats, all with the same number of replicas (`rf` when the topic
    /// already has one), and at least one running replica to lead.
    pub fn explicit_partitions(
        &self,
        assignments: &[Vec<i32>],
        rf: Option<usize>,
    ) -> Result<Vec<PartitionInfo>, CommandResult> {
        let bad = |reason: String| Err(CommandResult::InvalidReplicaAssignment { reason });
        if assignments.is_empty() || assignments.len() > MAX_PARTITIONS_PER_TOPIC as usize {
            return bad(format!(
                "the assignments must name between 1 and {MAX_PARTITIONS_PER_TOPIC} partitions. partitions={}",
                assignments.len()
            ));
        }
        let rf = rf.unwrap_or(assignments[0].len());
        let mut placed = Vec::with_capacity(assignments.len());
        for (i, replicas) in assignments.iter().enumerate() {
            if replicas.is_empty() || replicas.len() != rf {
                return bad(format!(
                    "every partition needs the same number of replicas. partition={i}, replicas={}, replication_factor={rf}",
                    replicas.len()
                ));
            }
            if let Some(b) = replicas.iter().find(|b| !self.brokers.contains_key(b)) {
                return bad(format!(
                    "the assignment names a broker that is not registered. partition={i}, broker={b}"
                ));
            }
            if let Some((_, b)) = replicas
                .iter()
                .enumerate()
                .find(|(j, b)| replicas[..*j].contains(b))
            {
                return bad(format!(
                    "the assignment names a broker twice. partition={i}, broker={b}"
                ));
            }
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|b| !self.fenced.contains(b))
                .collect();
            let Some(&leader) = isr.first() else {
                return bad(format!(
                    "every broker of the assignment is fenced. partition={i}, replicas={replicas:?}"
                ));
            };
            placed.push(PartitionInfo {
                leader,
                leader_epoch: 0,
                replicas: replicas.clone(),
                isr,
                ..PartitionInfo::default()
            });
        }
        Ok(placed)
    }

    fn alter_topic_configs(
        &mut self,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
        replace: bool,
    ) -> CommandResult {
        let Some(topic) = self.topics.get_mut(name) else {
            return CommandResult::UnknownTopic;
        };
        alter_map(&mut topic.configs, set, delete, replace);
        CommandResult::Ok
    }

    fn allocate_producer_ids(&mut self, count: i64) -> CommandResult {
        if count < 1 {
            return invalid_request(format!("producer id count must be positive. count={count}"));
        }
        let first = self.next_producer_id;
        let Some(next) = first.checked_add(count) else {
            return invalid_request(format!(
                "producer ids exhausted. next_producer_id={first}, count={count}"
            ));
        };
        self.next_producer_id = next;
        CommandResult::ProducerIdBlock { first, count }
    }

    fn init_cluster(&mut self, cluster_id: &str) -> CommandResult {
        if cluster_id.is_empty() {
            return invalid_request("cluster id must not be empty".to_string());
        }
        if self.cluster_id.is_empty() {
            self.cluster_id = cluster_id.to_string();
        }
        CommandResult::Ok
    }
}

fn invalid_request(reason: String) -> CommandResult {
    CommandResult::InvalidRequest { reason }
}

/// Partition `partition` of topic `id`: `rf` consecutive brokers (in id
/// order), starting at an offset derived from the topic id so that the
/// leaders of different topics spread over the brokers. The first replica
/// leads. `brokers` is sorted and `rf <= brokers.len()`.
fn assign_partition(brokers: &[i32], id: Uuid, partition: i32, rf: usize) -> PartitionInfo {
    let n = brokers.len().max(1);
    let start = (id.as_u128() % n as u128) as usize;
    let p = usize::try_from(partition).unwrap_or(0);
    let replicas: Vec<i32> = (0..rf)
        .filter_map(|r| brokers.get((start + p + r) % n).copied())
        .collect();
    PartitionInfo {
        leader: replicas.first().copied().unwrap_or(-1),
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        ..PartitionInfo::default()
    }
}

/// Finishes `p`'s reassignment once every target replica is in its ISR:
/// the leaving replicas go (from the replicas and the ISR), and a leader
/// among them hands over to the first live in-sync target replica.
fn complete_reassignment(p: &mut PartitionInfo, fenced: &std::collections::BTreeSet<i32>) {
    if !p.is_reassigning() {
        return;
    }
    let target = p.target_replicas();
    if !target.iter().all(|b| p.isr.contains(b)) {
        return;
    }
    p.isr.retain(|b| target.contains(b));
    p.replicas = target;
    p.adding.clear();
    p.removing.clear();
    if !p.replicas.contains(&p.leader) {
        elect(p, fenced, None, false);
    }
}

/// Elects a leader for `p` at a new epoch: the first in-sync replica (in
/// replica order) that is not fenced and not `avoid`, else `avoid` itself
/// when it is live and in sync, else nobody (-1). Only in-sync replicas
/// can lead: each holds every committed record.
fn elect(
    p: &mut PartitionInfo,
    fenced: &std::collections::BTreeSet<i32>,
    avoid: Option<i32>,
    unclean: bool,
) {
    let live = |b: &&i32| p.isr.contains(b) && !fenced.contains(b);
    let mut next = p
        .replicas
        .iter()
        .filter(live)
        .find(|b| Some(**b) != avoid)
        .or_else(|| p.replicas.iter().filter(live).find(|b| Some(**b) == avoid))
        .copied()
        .unwrap_or(-1);
    if next < 0 && unclean {
        // No in-sync replica is live: any live replica leads, alone in
        // the ISR (what only the old ISR had is lost).
        if let Some(b) = p.replicas.iter().find(|b| !fenced.contains(b)) {
            next = *b;
            p.isr = vec![*b];
        }
    }
    p.leader = next;
    p.leader_epoch += 1;
}

/// Kafka's topic name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not
/// `.` or `..`.
fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name must not be empty".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name must not be '.' or '..'. name={name}"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name too long. len={}, max={MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name has an illegal character, legal are [a-zA-Z0-9._-]. name={name}, char={c:?}"
        ));
    }
    Ok(())
}

/// A config change: with `replace`, the result is exactly `set`; without,
/// `delete` keys are removed and `set` keys upserted.
fn alter_map(
    configs: &mut BTreeMap<String, String>,
    set: &BTreeMap<String, String>,
    delete: &[String],
    replace: bool,
) {
    if replace {
        *configs = set.clone();
    } else {
        for key in delete {
            configs.remove(key);
        }
        configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> BrokerInfo {
        BrokerInfo {
            node_id: id,
            host: "localhost".to_string(),
            port: 9092 + id,
            rack: None,
            listeners: Vec::new(),
        }
    }

    fn view_with_brokers(ids: &[i32]) -> ClusterView {
        let mut view = ClusterView::default();
        for &id in ids {
            assert_eq!(
                view.apply(&Command::RegisterBroker(broker(id))),
                CommandResult::Ok
            );
        }
        view
    }

    fn create(name: &str, id: Uuid, partitions: i32, rf: i16) -> Command {
        Command::CreateTopic {
            name: name.to_string(),
            id,
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
            assignments: None,
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn register_broker_upserts() {
        let mut view = view_with_brokers(&[1]);
        let mut moved = broker(1);
        moved.host = "other".to_string();
        moved.rack = Some("r1".to_string());
        assert_eq!(
            view.apply(&Command::RegisterBroker(moved.clone())),
            CommandResult::Ok
        );
        assert_eq!(view.brokers.len(), 1);
        assert_eq!(view.brokers[&1], moved);
    }

    #[test]
    fn only_a_stopped_broker_that_hosts_nothing_is_unregistered() {
        let mut view = view_with_brokers(&[1, 2, 3, 4]);
        let t = Command::CreateTopic {
            name: "t".to_string(),
            id: id(1),
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignments: Some(vec![vec![1, 4], vec![2, 3]]),
        };
        assert_eq!(view.apply(&t), CommandResult::Ok);
        let unregister =
            |view: &mut ClusterView, node_id| view.apply(&Command::UnregisterBroker { node_id });
        assert_eq!(unregister(&mut view, 9), CommandResult::BrokerNotRegistered);
        let running = unregister(&mut view, 3);
        assert!(
            matches!(&running, CommandResult::BrokerStillHosting { reason } if reason.contains("running")),
            "{running:?}"
        );
        assert_eq!(
            view.apply(&Command::ControlledShutdown { node_id: 4 }),
            CommandResult::Ok
        );
        let hosting = unregister(&mut view, 4);
        assert!(
            matches!(&hosting, CommandResult::BrokerStillHosting { reason } if reason.contains("replicas=1")),
            "{hosting:?}"
        );
        assert!(view.brokers.contains_key(&4), "refused: still registered");
        // Moved off (the move completes once the new replica is in sync).
        let moved = view.apply(&Command::Reassign {
            partitions: vec![(id(1), 0, Some(vec![1, 2]))],
        });
        assert_eq!(
            moved,
            CommandResult::Reassignments {
                outcomes: vec![ReassignOutcome::Done]
            }
        );
        let p = &view.topics["t"].partitions[0];
        let (leader, leader_epoch) = (p.leader, p.leader_epoch);
        assert_eq!(
            view.apply(&Command::AlterPartition {
                topic_id: id(1),
                partition: 0,
                leader,
                leader_epoch,
                isr: vec![1, 2],
            }),
            CommandResult::Ok
        );
        assert_eq!(view.topics["t"].partitions[0].replicas, vec![1, 2]);
        assert_eq!(unregister(&mut view, 4), CommandResult::Ok);
        assert!(!view.brokers.contains_key(&4));
        assert!(!view.fenced.contains(&4) && !view.shut_down.contains(&4));
        assert!(view.unregistered.contains(&4));
        assert_eq!(unregister(&mut view, 4), CommandResult::BrokerNotRegistered);
        // It may come back: registering again takes it off the list.
        assert_eq!(
            view.apply(&Command::RegisterBroker(broker(4))),
            CommandResult::Ok
        );
        assert!(view.unregistered.is_empty());
    }

    #[test]
    fn register_broker_rejects_bad_id_and_port() {
        let mut view = ClusterView::default();
        assert!(matches!(
            view.apply(&Command::RegisterBroker(broker(-1))),
            CommandResult::InvalidRequest { .. }
        ));
        let mut b = broker(1);
        b.port = 70000;
        assert!(matches!(
            view.apply(&Command::RegisterBroker(b)),
            CommandResult::InvalidRequest { .. }
        ));
        assert!(view.brokers.is_empty());
    }

    #[test]
    fn create_topic_on_one_broker() {
        let mut view = view_with_brokers(&[1]);
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let cmd = Command::CreateTopic {
            name: "orders".to_string(),
            id: id(7),
            partitions: 3,
            replication_factor: 1,
            configs: configs.clone(),
            assignments: None,
        };
        assert_eq!(view.apply(&cmd), CommandResult::Ok);
        let topic = view.topic("orders").expect("created");
        assert_eq!(topic.id, id(7));
        assert_eq!(topic.configs, configs);
        assert_eq!(topic.partitions.len(), 3);
        for p in &topic.partitions {
            assert_eq!(
                p,
                &PartitionInfo {
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    ..PartitionInfo::default()
                }
            );
        }
        assert_eq!(
            view.topic_by_id(id(7)).map(|t| t.name.as_str()),
            Some("orders")
        );
    }

    /// A view with brokers 1..=3 and topic `r` (id 1) of one partition
    /// with three replicas.
    fn replicated() -> ClusterView {
        let mut view = view_with_brokers(&[1, 2, 3]);
        assert_eq!(view.apply(&create("r", id(1), 1, 3)), CommandResult::Ok);
        view
    }

    fn part(view: &ClusterView) -> PartitionInfo {
        view.topics["r"].partitions[0].clone()
    }

    /// The replicas of `p` other than its leader, in replica order.
    fn followers(p: &PartitionInfo) -> Vec<i32> {
        p.replicas
            .iter()
            .copied()
            .filter(|b| *b != p.leader)
            .collect()
    }

    #[test]
    fn a_fenced_leader_hands_over_to_an_in_sync_replica_and_leaves_the_isr() {
        let mut view = replicated();
        let p = part(&view);
        let leader = p.leader;
        view.apply(&Command::FenceBroker { node_id: leader });
        let after = part(&view);
        assert_ne!(after.leader, leader);
        assert!(after.isr.contains(&after.leader));
        assert!(!after.isr.contains(&leader));
        assert_eq!(after.leader_epoch, p.leader_epoch + 1);
        // Back, it is not in sync: it rejoins only through its leader.
        view.apply(&Command::UnfenceBroker { node_id: leader });
        assert_eq!(part(&view).isr.len(), 2);
        let alter = |isr: Vec<i32>, epoch| Command::AlterPartition {
            topic_id: id(1),
            partition: 0,
            leader: after.leader,
            leader_epoch: epoch,
            isr,
        };
        assert!(matches!(
            view.apply(&alter(vec![1, 2, 3], after.leader_epoch - 1)),
            CommandResult::InvalidRequest { .. }
        ));
        assert_eq!(
            view.apply(&alter(vec![3, 2, 1], after.leader_epoch)),
            CommandResult::Ok
        );
        assert_eq!(part(&view).isr, part(&view).replicas, "in replica order");
    }

    #[test]
    fn the_last_in_sync_replica_fenced_leaves_no_leader_until_it_returns() {
        let mut view = replicated();
        let p = part(&view);
        let others = followers(&p);
        for b in &others {
            view.apply(&Command::FenceBroker { node_id: *b });
        }
        assert_eq!(part(&view).isr, vec![p.leader]);
        view.apply(&Command::FenceBroker { node_id: p.leader });
        let down = part(&view);
        assert_eq!(down.leader, -1, "no in-sync replica is live");
        assert_eq!(
            down.isr,
            vec![p.leader],
            "the last one stays, to lead when back"
        );
        // A follower that was not in sync coming back does not lead.
        view.apply(&Command::UnfenceBroker { node_id: others[0] });
        assert_eq!(part(&view).leader, -1);
        view.apply(&Command::UnfenceBroker { node_id: p.leader });
        assert_eq!(part(&view).leader, p.leader);
        assert_eq!(part(&view).leader_epoch, down.leader_epoch + 1);
    }

    #[test]
    fn an_unclean_election_takes_a_live_replica_outside_the_isr_when_allowed() {
        for (topic_says, broker_says, unclean) in [
            (None, None, false),
            (Some("true"), None, true),
            (None, Some("true"), true),
            (Some("false"), Some("true"), false),
        ] {
            let mut view = replicated();
            if let Some(v) = broker_says {
                view.broker_configs
                    .insert(UNCLEAN_ELECTION.to_string(), v.to_string());
            }
            if let Some(v) = topic_says {
                view.topics
                    .get_mut("r")
                    .unwrap()
                    .configs
                    .insert(UNCLEAN_ELECTION.to_string(), v.to_string());
            }
            let p = part(&view);
            let others = followers(&p);
            // The followers drop out of the ISR, then the leader goes.
            for b in &others {
                view.apply(&Command::FenceBroker { node_id: *b });
            }
            view.apply(&Command::FenceBroker { node_id: p.leader });
            assert_eq!(part(&view).leader, -1);
            view.apply(&Command::UnfenceBroker { node_id: others[0] });
            let after = part(&view);
            if unclean {
                assert_eq!(after.leader, others[0], "{topic_says:?} {broker_says:?}");
                assert_eq!(after.isr, vec![others[0]]);
            } else {
                assert_eq!(after.leader, -1, "{topic_says:?} {broker_says:?}");
                assert_eq!(after.isr, vec![p.leader]);
            }
        }
    }

    #[test]
    fn a_controlled_shutdown_hands_over_and_stays_fenced_until_a_start() {
        let mut view = replicated();
        let p = part(&view);
        assert_eq!(
            view.apply(&Command::ControlledShutdown { node_id: p.leader }),
            CommandResult::Ok
        );
        let after = part(&view);
        assert_ne!(after.leader, p.leader);
        assert!(!after.isr.contains(&p.leader));
        assert!(view.fenced.contains(&p.leader) && view.shut_down.contains(&p.leader));
        assert!(matches!(
            view.apply(&Command::ControlledShutdown { node_id: 99 }),
            CommandResult::InvalidRequest { .. }
        ));
        assert!(!view.shut_down.contains(&99));
        view.apply(&Command::BrokerStarted { node_id: p.leader });
        assert!(!view.shut_down.contains(&p.leader));
        assert!(view.fenced.contains(&p.leader), "until it heartbeats");
        view.apply(&Command::UnfenceBroker { node_id: p.leader });
        assert!(!view.fenced.contains(&p.leader));
    }

    #[test]
    fn a_restarted_leader_hands_over_or_takes_a_new_epoch() {
        let mut view = replicated();
        let p = part(&view);
        view.apply(&Command::BrokerStarted { node_id: p.leader });
        let moved = part(&view);
        assert_ne!(moved.leader, p.leader);
        assert!(
            moved.isr.contains(&p.leader),
            "its durable log keeps it in sync"
        );
        // Alone in the ISR, it leads again at a new epoch.
        let mut view = replicated();
        for b in p.replicas.iter().filter(|b| **b != p.leader) {
            view.apply(&Command::FenceBroker { node_id: *b });
        }
        let before = part(&view).leader_epoch;
        view.apply(&Command::BrokerStarted { node_id: p.leader });
        assert_eq!(part(&view).leader, p.leader);
        assert_eq!(part(&view).leader_epoch, before + 1);
    }

    proptest::proptest! {
        /// Any sequence of fences, unfences, restarts, controlled
        /// shutdowns and ISR changes, with unclean elections allowed or
        /// not:
        /// a leader is always a live in-sync replica (or there is none),
        /// the ISR never empties nor leaves the replicas, and the leader
        /// epoch never goes back.
        #[test]
        fn elections_keep_leaders_in_sync_and_epochs_rising(
            ops in proptest::collection::vec((0u8..5, 1i32..4, proptest::collection::vec(1i32..4, 1..4)), 1..60),
            unclean in proptest::bool::ANY,
        ) {
            let mut view = replicated();
            if unclean {
                view.broker_configs.insert(UNCLEAN_ELECTION.to_string(), "true".to_string());
            }
            let mut epoch = part(&view).leader_epoch;
            for (op, b, isr) in ops {
                let p = part(&view);
                let cmd = match op {
                    0 => Command::FenceBroker { node_id: b },
                    1 => Command::UnfenceBroker { node_id: b },
                    2 => Command::BrokerStarted { node_id: b },
                    3 => Command::ControlledShutdown { node_id: b },
                    _ => Command::AlterPartition {
                        topic_id: id(1),
                        partition: 0,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        isr: isr.into_iter().chain([p.leader]).collect(),
                    },
                };
                view.apply(&cmd);
                let p = part(&view);
                proptest::prop_assert!(p.leader_epoch >= epoch);
                epoch = p.leader_epoch;
                proptest::prop_assert!(!p.isr.is_empty());
                proptest::prop_assert!(p.isr.iter().all(|b| p.replicas.contains(b)));
                if p.leader >= 0 {
                    proptest::prop_assert!(p.isr.contains(&p.leader), "{p:?}");
                    proptest::prop_assert!(!view.fenced.contains(&p.leader), "{p:?}");
                }
            }
        }
    }

    #[test]
    fn fenced_brokers_get_no_new_partitions_until_they_register_again() {
        let mut view = view_with_brokers(&[1, 2, 3]);
        let fence = Command::FenceBroker { node_id: 2 };
        assert_eq!(view.apply(&fence), CommandResult::Ok);
        assert_eq!(view.apply(&fence), CommandResult::Ok, "idempotent");
        assert!(view.fenced.contains(&2));
        assert_eq!(view.apply(&create("t", id(3), 6, 1)), CommandResult::Ok);
        assert!(view.topics["t"].partitions.iter().all(|p| p.leader != 2));
        assert!(matches!(
            view.apply(&create("three", id(5), 1, 3)),
            CommandResult::InvalidReplicationFactor { .. }
        ));
        assert!(matches!(
            view.apply(&Command::FenceBroker { node_id: 9 }),
            CommandResult::InvalidRequest { .. }
        ));
        // Heartbeats again, or registers at a restart.
        assert_eq!(
            view.apply(&Command::UnfenceBroker { node_id: 2 }),
            CommandResult::Ok
        );
        assert!(view.fenced.is_empty());
        view.apply(&fence);
        assert_eq!(
            view.apply(&Command::RegisterBroker(broker(2))),
            CommandResult::Ok
        );
        assert!(view.fenced.is_empty());
    }

    #[test]
    fn create_topic_round_robin_over_brokers() {
        let mut view = view_with_brokers(&[1, 2, 3]);
        // id 0 mod 3 brokers: start at the first broker.
        assert_eq!(view.apply(&create("t", id(3), 4, 2)), CommandResult::Ok);
        let replicas: Vec<Vec<i32>> = view.topics["t"]
            .partitions
            .iter()
            .map(|p| p.replicas.clone())
            .collect();
        assert_eq!(
            replicas,
            vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 2]]
        );
        let leaders: Vec<i32> = view.topics["t"]
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, vec![1, 2, 3, 1]);
        // Another topic starts elsewhere.
        assert_eq!(view.apply(&create("u", id(4), 1, 3)), CommandResult::Ok);
        assert_eq!(view.topics["u"].partitions[0].replicas, vec![2, 3, 1]);
        assert_eq!(view.topics["u"].partitions[0].isr, vec![2, 3, 1]);
    }

    #[test]
    fn create_topic_duplicates() {
        let mut view = view_with_brokers(&[1]);
        assert_eq!(view.apply(&create("t", id(1), 1, 1)), CommandResult::Ok);
        let before = view.clone();
        assert_eq!(
            view.apply(&create("t", id(2), 1, 1)),
            CommandResult::TopicAlreadyExists
        );
        assert_eq!(
            view.apply(&create("other", id(1), 1, 1)),
            CommandResult::TopicAlreadyExists
        );
        assert_eq!(view, before);
    }

    #[test]
    fn create_topic_validation() {
        let mut view = view_with_brokers(&[1]);
        assert!(matches!(
            view.apply(&create("t", id(1), 0, 1)),
            CommandResult::InvalidPartitions { .. }
        ));
        assert!(matches!(
            view.apply(&create("t", id(1), MAX_PARTITIONS_PER_TOPIC + 1, 1)),
            CommandResult::InvalidPartitions { .. }
        ));
        assert!(matches!(
            view.apply(&create("t", id(1), 1, 0)),
            CommandResult::InvalidReplicationFactor { .. }
        ));
        assert!(matches!(
            view.apply(&create("t", id(1), 1, 2)),
            CommandResult::InvalidReplicationFactor { .. }
        ));
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(
                matches!(
                    view.apply(&create(bad, id(1), 1, 1)),
                    CommandResult::InvalidTopic { .. }
                ),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            view.apply(&create("t", Uuid::nil(), 1, 1)),
            CommandResult::InvalidRequest { .. }
        ));
        assert!(view.topics.is_empty());
        assert!(view.topic_names_by_id.is_empty());

        assert_eq!(view.apply(&create("a.b", id(1), 1, 1)), CommandResult::Ok);
        assert!(matches!(
            view.apply(&create("a_b", id(2), 1, 1)),
            CommandResult::InvalidTopic { .. }
        ));
    }

    #[test]
    fn create_topic_without_brokers() {
        let mut view = ClusterView::default();
        assert!(matches!(
            view.apply(&create("t", id(1), 1, 1)),
            CommandResult::InvalidReplicationFactor { .. }
        ));
    }

    #[test]
    fn delete_topic() {
        let mut view = view_with_brokers(&[1]);
        assert_eq!(view.apply(&create("t", id(1), 1, 1)), CommandResult::Ok);
        assert_eq!(
            view.apply(&Command::DeleteTopic { id: id(1) }),
            CommandResult::Ok
        );
        assert!(view.topic("t").is_none());
        assert!(view.topic_by_id(id(1)).is_none());
        assert_eq!(
            view.apply(&Command::DeleteTopic { id: id(1) }),
            CommandResult::UnknownTopic
        );
        // The name can be reused with a new id.
        assert_eq!(view.apply(&create("t", id(2), 1, 1)), CommandResult::Ok);
        assert_eq!(view.topic("t").map(|t| t.id), Some(id(2)));
    }

    #[test]
    fn create_partitions_grows_only() {
        let mut view = view_with_brokers(&[1, 2]);
        assert_eq!(view.apply(&create("t", id(2), 2, 2)), CommandResult::Ok);
        let grow = |n| Command::CreatePartitions {
            name: "t".to_string(),
            total_count: n,
            assignments: None,
        };
        assert_eq!(view.apply(&grow(4)), CommandResult::Ok);
        let topic = &view.topics["t"];
        assert_eq!(topic.partitions.len(), 4);
        assert_eq!(topic.partitions[2].replicas, vec![1, 2]);
        assert_eq!(topic.partitions[3].replicas, vec![2, 1]);
        for n in [4, 3, 0, -1] {
            assert!(
                matches!(
                    view.apply(&grow(n)),
                    CommandResult::InvalidPartitions { .. }
                ),
                "{n} accepted"
            );
        }
        assert!(matches!(
            view.apply(&grow(MAX_PARTITIONS_PER_TOPIC + 1)),
            CommandResult::InvalidPartitions { .. }
        ));
        assert_eq!(view.topics["t"].partitions.len(), 4);
        assert_eq!(
            view.apply(&Command::CreatePartitions {
                name: "nope".to_string(),
                total_count: 5,
                assignments: None,
            }),
            CommandResult::UnknownTopic
        );
    }

    #[test]
    fn the_default_replication_factor_is_three_or_every_running_broker() {
        for (brokers, want) in [(vec![1], 1), (vec![1, 2], 2), (vec![1, 2, 3, 4, 5], 3)] {
            let mut view = view_with_brokers(&brokers);
            assert_eq!(view.apply(&create("t", id(1), 5, -1)), CommandResult::Ok);
            assert!(view.topics["t"]
                .partitions
                .iter()
                .all(|p| p.replicas.len() == want && p.isr == p.replicas));
        }
        // A fenced broker is not running: no replicas go to it.
        let mut view = view_with_brokers(&[1, 2, 3]);
        view.fenced.insert(2);
        assert_eq!(view.apply(&create("t", id(1), 4, -1)), CommandResult::Ok);
        assert!(view.topics["t"]
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 2 && !p.replicas.contains(&2)));
        for rf in [0, -2, 3] {
            assert!(
                matches!(
                    view.apply(&create("u", id(2), 1, rf)),
                    CommandResult::InvalidReplicationFactor { .. }
                ),
                "{rf} accepted"
            );
        }
    }

    #[test]
    fn leaders_spread_over_the_brokers() {
        let mut view = view_with_brokers(&[1, 2, 3]);
        assert_eq!(view.apply(&create("t", id(7), 6, 3)), CommandResult::Ok);
        let mut led = BTreeMap::new();
        for p in &view.topics["t"].partitions {
            *led.entry(p.leader).or_insert(0) += 1;
            let mut r = p.replicas.clone();
            r.sort_unstable();
            assert_eq!(r, vec![1, 2, 3]);
        }
        assert_eq!(led.into_values().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    fn create_assigned(name: &str, id: Uuid, assignments: Vec<Vec<i32>>) -> Command {
        Command::CreateTopic {
            name: name.to_string(),
            id,
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignments: Some(assignments),
        }
    }

    #[test]
    fn explicit_assignments_place_replicas_as_named() {
        let mut view = view_with_brokers(&[1, 2, 3]);
        view.fenced.insert(3);
        assert_eq!(
            view.apply(&create_assigned("t", id(1), vec![vec![3, 1], vec![2, 3]])),
            CommandResult::Ok
        );
        let t = &view.topics["t"];
        // The first running replica leads; a fenced one is out of the ISR.
        assert_eq!(
            (t.partitions[0].leader, &t.partitions[0].isr),
            (1, &vec![1])
        );
        assert_eq!(t.partitions[0].replicas, vec![3, 1]);
        assert_eq!(
            (t.partitions[1].leader, &t.partitions[1].isr),
            (2, &vec![2])
        );
        for bad in [
            vec![],
            vec![vec![]],
            vec![vec![1, 2], vec![1]],
            vec![vec![1, 1]],
            vec![vec![1, 9]],
            vec![vec![3]],
        ] {
            assert!(
                matches!(
                    view.apply(&create_assigned("u", id(2), bad.clone())),
                    CommandResult::InvalidReplicaAssignment { .. }
                ),
                "{bad:?} accepted"
            );
        }
        assert!(view.topic("u").is_none());
        // New partitions: as many lists as partitions, the topic's factor.
        let grow = |n, a: Vec<Vec<i32>>| Command::CreatePartitions {
            name: "t".to_string(),
            total_count: n,
            assignments: Some(a),
        };
        for bad in [
            vec![vec![1, 2], vec![2, 1]],
            vec![vec![1]],
            vec![vec![1, 2, 3]],
        ] {
            assert!(
                matches!(
                    view.apply(&grow(3, bad.clone())),
                    CommandResult::InvalidReplicaAssignment { .. }
                ),
                "{bad:?} accepted"
            );
        }
        assert_eq!(view.apply(&grow(3, vec![vec![2, 1]])), CommandResult::Ok);
        assert_eq!(view.topics["t"].partitions[2].replicas, vec![2, 1]);
        assert_eq!(view.topics["t"].partitions[2].leader, 2);
    }

    #[test]
    fn preferred_and_unclean_elections() {
        let mut view = view_with_brokers(&[1, 2, 3]);
        assert_eq!(view.apply(&create("t", id(5), 3, 3)), CommandResult::Ok);
        let tid = id(5);
        // Partition 0 led by its second replica, its first in sync.
        let p0 = view.topics["t"].partitions[0].clone();
        let (first, second) = (p0.replicas[0], p0.replicas[1]);
        {
            let p = &mut view.topics.get_mut("t").unwrap().partitions[0];
            p.leader = second;
            p.leader_epoch = 4;
        }
        // Partition 1: its first replica out of the ISR.
        let p1_first = view.topics["t"].partitions[1].replicas[0];
        view.topics.get_mut("t").unwrap().partitions[1]
            .isr
            .retain(|b| *b != p1_first);
        let elect = |e, parts: Vec<(Uuid, i32)>| Command::ElectLeaders {
            election: e,
            partitions: parts,
        };
        assert_eq!(
            view.apply(&elect(
                Election::Preferred,
                vec![(tid, 0), (tid, 1), (tid, 2), (tid, 9), (id(77), 0)]
            )),
            CommandResult::Elections {
                outcomes: vec![
                    ElectionOutcome::Elected,
                    ElectionOutcome::NotNeeded,
                    ElectionOutcome::NotNeeded,
                    ElectionOutcome::UnknownPartition,
                    ElectionOutcome::UnknownPartition,
                ]
            }
        );
        let p = &view.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch), (first, 5));
        // Partition 1 led elsewhere, its preferred replica out of sync.
        let other = view.topics["t"].partitions[1].isr[0];
        view.topics.get_mut("t").unwrap().partitions[1].leader = other;
        assert_eq!(
            view.apply(&elect(Election::Preferred, vec![(tid, 1)])),
            CommandResult::Elections {
                outcomes: vec![ElectionOutcome::NotAvailable]
            }
        );
        // Unclean: only for a partition without a leader; any live replica.
        assert_eq!(
            view.apply(&elect(Election::Unclean, vec![(tid, 2)])),
            CommandResult::Elections {
                outcomes: vec![ElectionOutcome::NotNeeded]
            }
        );
        {
            let p = &mut view.topics.get_mut("t").unwrap().partitions[2];
            p.leader = -1;
            p.isr = vec![p.replicas[0]];
        }
        let p2 = view.topics["t"].partitions[2].clone();
        view.fenced.insert(p2.replicas[0]);
        assert_eq!(
            view.apply(&elect(Election::Unclean, vec![(tid, 2)])),
            CommandResult::Elections {
                outcomes: vec![ElectionOutcome::Elected]
            }
        );
        let p = &view.topics["t"].partitions[2];
        assert_eq!(p.leader, p2.replicas[1]);
        assert_eq!(p.isr, vec![p2.replicas[1]]);
        for b in [1, 2, 3] {
            view.fenced.insert(b);
        }
        view.topics.get_mut("t").unwrap().partitions[2].leader = -1;
        assert_eq!(
            view.apply(&elect(Election::Unclean, vec![(tid, 2)])),
            CommandResult::Elections {
                outcomes: vec![ElectionOutcome::NotAvailable]
            }
        );
    }

    #[test]
    fn imbalanced_leaders_past_the_percentage_move_back() {
        let mut view = view_with_brokers(&[1, 2, 3]);
        assert_eq!(view.apply(&create("t", id(1), 30, 3)), CommandResult::Ok);
        assert!(view.imbalanced_leaders(10).is_empty());
        // Broker 1 restarted: every partition it preferred is led by
        // another replica, and it is back in their ISRs.
        let mut moved = Vec::new();
        for (i, p) in view
            .topics
            .get_mut("t")
            .unwrap()
            .partitions
            .iter_mut()
            .enumerate()
        {
            if p.replicas[0] == 1 {
                p.leader = p.replicas[1];
                moved.push((id(1), i as i32));
            }
        }
        assert_eq!(moved.len(), 10);
        let mut due = view.imbalanced_leaders(10);
        due.sort();
        assert_eq!(due, moved);
        // One of ten is 10%: not above it.
        for (_, i) in &moved[1..] {
            let p = &mut view.topics.get_mut("t").unwrap().partitions[*i as usize];
            p.leader = 1;
        }
        assert!(view.imbalanced_leaders(10).is_empty());
        assert_eq!(view.imbalanced_leaders(5), vec![moved[0]]);
        // Fenced, it gets nothing back.
        view.fenced.insert(1);
        assert!(view.imbalanced_leaders(5).is_empty());
    }

    #[test]
    fn a_reassignment_completes_once_the_new_replicas_are_in_sync() {
        let mut view = view_with_brokers(&[1, 2, 3, 4]);
        assert_eq!(
            view.apply(&create_assigned("t", id(3), vec![vec![1, 2], vec![2, 1]])),
            CommandResult::Ok
        );
        let tid = id(3);
        let move_to = |p: i32, target: Option<Vec<i32>>| Command::Reassign {
            partitions: vec![(tid, p, target)],
        };
        let alter = |leader: i32, epoch: i32, isr: Vec<i32>| Command::AlterPartition {
            topic_id: tid,
            partition: 0,
            leader,
            leader_epoch: epoch,
            isr,
        };
        let done = CommandResult::Reassignments {
            outcomes: vec![ReassignOutcome::Done],
        };
        assert_eq!(view.apply(&move_to(0, Some(vec![3, 4]))), done);
        let p = view.topics["t"].partitions[0].clone();
        assert_eq!(p.replicas, vec![3, 4, 1, 2]);
        assert_eq!(
            (p.adding.clone(), p.removing.clone()),
            (vec![3, 4], vec![1, 2])
        );
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 0, vec![1, 2])
        );
        // One new replica in sync: not yet.
        assert_eq!(view.apply(&alter(1, 0, vec![1, 2, 3])), CommandResult::Ok);
        assert!(view.topics["t"].partitions[0].is_reassigning());
        // Both: the old ones leave, and the leader hands over.
        assert_eq!(
            view.apply(&alter(1, 0, vec![1, 2, 3, 4])),
            CommandResult::Ok
        );
        let p = view.topics["t"].partitions[0].clone();
        assert!(!p.is_reassigning());
        assert_eq!(p.replicas, vec![3, 4]);
        assert_eq!((p.leader, p.leader_epoch, p.isr), (3, 1, vec![3, 4]));
        assert_eq!(
            view.apply(&move_to(0, None)),
            CommandResult::Reassignments {
                outcomes: vec![ReassignOutcome::NoReassignmentInProgress]
            }
        );
        for bad in [vec![], vec![9], vec![3, 3]] {
            assert!(
                matches!(
                    view.apply(&move_to(1, Some(bad.clone()))),
                    CommandResult::Reassignments { outcomes } if matches!(outcomes[0], ReassignOutcome::InvalidReplicaAssignment { .. })
                ),
                "{bad:?} accepted"
            );
        }
        // Cancelled half-way: back to the original replicas.
        assert_eq!(view.apply(&move_to(1, Some(vec![2, 3]))), done);
        assert_eq!(view.topics["t"].partitions[1].replicas, vec![2, 3, 1]);
        assert_eq!(view.apply(&move_to(1, None)), done);
        let p = &view.topics["t"].partitions[1];
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 1], vec![2, 1], 2)
        );
        assert!(!p.is_reassigning());
        // Dropping a replica completes at once (the rest is in sync).
        assert_eq!(view.apply(&move_to(1, Some(vec![1]))), done);
        let p = &view.topics["t"].partitions[1];
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1], vec![1], 1)
        );
        assert_eq!(p.leader_epoch, 1);
        assert_eq!(
            view.apply(&move_to(7, Some(vec![1]))),
            CommandResult::Reassignments {
                outcomes: vec![ReassignOutcome::UnknownPartition]
            }
        );
    }

    #[test]
    fn create_partitions_needs_enough_brokers() {
        let mut view = view_with_brokers(&[1, 2]);
        assert_eq!(view.apply(&create("t", id(1), 1, 2)), CommandResult::Ok);
        view.brokers.remove(&2);
        assert!(matches!(
            view.apply(&Command::CreatePartitions {
                name: "t".to_string(),
                total_count: 2,
                assignments: None,
            }),
            CommandResult::InvalidReplicationFactor { .. }
        ));
    }

    #[test]
    fn alter_topic_configs_incremental_and_replace() {
        let mut view = view_with_brokers(&[1]);
        assert_eq!(view.apply(&create("t", id(1), 1, 1)), CommandResult::Ok);
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let alter =
            |set: BTreeMap<String, String>, delete: &[&str], replace| Command::AlterTopicConfigs {
                name: "t".to_string(),
                set,
                delete: delete.iter().map(|s| s.to_string()).collect(),
                replace,
            };
        assert_eq!(
            view.apply(&alter(map(&[("a", "1"), ("b", "2")]), &[], false)),
            CommandResult::Ok
        );
        assert_eq!(
            view.apply(&alter(
                map(&[("c", "3"), ("a", "9")]),
                &["b", "missing"],
                false
            )),
            CommandResult::Ok
        );
        assert_eq!(view.topics["t"].configs, map(&[("a", "9"), ("c", "3")]));
        assert_eq!(
            view.apply(&alter(map(&[("z", "0")]), &[], true)),
            CommandResult::Ok
        );
        assert_eq!(view.topics["t"].configs, map(&[("z", "0")]));
        assert_eq!(
            view.apply(&alter(BTreeMap::new(), &[], true)),
            CommandResult::Ok
        );
        assert!(view.topics["t"].configs.is_empty());
        let unknown = Command::AlterTopicConfigs {
            name: "nope".to_string(),
            set: BTreeMap::new(),
            delete: vec![],
            replace: false,
        };
        assert_eq!(view.apply(&unknown), CommandResult::UnknownTopic);
    }

    #[test]
    fn producer_ids_are_handed_out_in_blocks() {
        let mut view = ClusterView::default();
        assert_eq!(
            view.apply(&Command::AllocateProducerIds { count: 1000 }),
            CommandResult::ProducerIdBlock {
                first: 0,
                count: 1000
            }
        );
        assert_eq!(
            view.apply(&Command::AllocateProducerIds { count: 10 }),
            CommandResult::ProducerIdBlock {
                first: 1000,
                count: 10
            }
        );
        assert_eq!(view.next_producer_id, 1010);
        for count in [0, -5] {
            assert!(matches!(
                view.apply(&Command::AllocateProducerIds { count }),
                CommandResult::InvalidRequest { .. }
            ));
        }
        view.next_producer_id = i64::MAX - 5;
        assert!(matches!(
            view.apply(&Command::AllocateProducerIds { count: 10 }),
            CommandResult::InvalidRequest { .. }
        ));
        assert_eq!(view.next_producer_id, i64::MAX - 5);
    }

    #[test]
    fn init_cluster_sets_the_id_once() {
        let mut view = ClusterView::default();
        assert!(matches!(
            view.apply(&Command::InitCluster {
                cluster_id: String::new()
            }),
            CommandResult::InvalidRequest { .. }
        ));
        for id in ["first", "second"] {
            assert_eq!(
                view.apply(&Command::InitCluster {
                    cluster_id: id.to_string()
                }),
                CommandResult::Ok
            );
        }
        assert_eq!(view.cluster_id, "first");
    }

    #[test]
    fn view_round_trips_through_json() {
        let mut view = view_with_brokers(&[1]);
        assert_eq!(view.apply(&create("t", id(1), 2, 1)), CommandResult::Ok);
        let json = serde_json::to_vec(&view).expect("serialize");
        let back: ClusterView = serde_json::from_slice(&json).expect("deserialize");
        assert_eq!(back, view);
    }
}
