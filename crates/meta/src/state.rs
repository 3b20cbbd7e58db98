//! The cluster metadata every node holds: brokers, topics, partitions, and the version (the
//! index of the last applied log entry). [`MetadataState::apply`] is the only way it changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::{Command, MetaError};
use crate::types::NodeId;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Broker id (= node id).
    pub id: NodeId,
    /// Address of its broker listener, as clients should dial it.
    pub address: String,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Random id of the current process; changes at every restart.
    pub incarnation: u64,
    /// Log index of the current registration (Kafka's broker epoch).
    pub epoch: u64,
    /// Fenced brokers lead nothing and are in no ISR unless they were its last member.
    pub fenced: bool,
}

/// State of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// Current leader; `None` while no eligible replica is alive.
    pub leader: Option<NodeId>,
    /// Bumped at every leader change.
    pub leader_epoch: i32,
    /// Bumped at every change of leader or ISR (guards AlterPartition).
    pub partition_epoch: i32,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Unique id of this incarnation of the topic.
    pub id: String,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<PartitionInfo>,
}

/// Everything the metadata log describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetadataState {
    /// Index of the last applied log entry; grows with every entry.
    pub version: u64,
    /// Brokers by id.
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// The first producer id not yet handed out in a block. Serialized after the rest of a
    /// snapshot, not with the state, so snapshots written before it existed still load.
    #[serde(skip)]
    pub next_producer_id: i64,
}

/// Most partition replicas one broker may hold, across all topics: each costs it file
/// descriptors (one per segment), memory and a fetcher, so a topic of 100,000 partitions on a
/// small cluster is refused when it is created instead of running nodes out of descriptors.
/// Kafka's guidance is a few thousand per broker.
pub const MAX_REPLICAS_PER_BROKER: usize = 10_000;

/// Producer ids handed to a broker by one [`Command::AllocateProducerIds`], as in Kafka.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Longest topic name, as in Kafka.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name against Kafka's rules: 1 to 249 characters from `[a-zA-Z0-9._-]`,
/// and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let invalid = |reason: &str| MetaError::InvalidTopic {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("`.` and `..` are not allowed"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid("longer than 249 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "character {c:?} is not one of [a-zA-Z0-9._-]"
        )));
    }
    Ok(())
}

impl MetadataState {
    /// Applies `command` as log entry `index`. A refused command changes nothing but the
    /// version.
    pub fn apply(&mut self, index: u64, command: &Command) -> Result<(), MetaError> {
        self.version = index;
        match command {
            Command::RegisterBroker {
                id,
                address,
                rack,
                incarnation,
            } => {
                let previous = self.brokers.get(id).map(|b| b.incarnation);
                if previous.is_some_and(|p| p != *incarnation) || previous.is_none() {
                    // A restarted process lost what it had in memory: treat it as failed first.
                    if previous.is_some() {
                        self.fence(*id);
                    }
                    self.brokers.insert(
                        *id,
                        BrokerInfo {
                            id: *id,
                            address: address.clone(),
                            rack: rack.clone(),
                            incarnation: *incarnation,
                            epoch: index,
                            fenced: true,
                        },
                    );
                } else if let Some(b) = self.brokers.get_mut(id) {
                    b.address = address.clone();
                    b.rack = rack.clone();
                }
                Ok(())
            }
            Command::FenceBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return Err(MetaError::UnknownBroker(*id));
                }
                self.fence(*id);
                Ok(())
            }
            Command::UnfenceBroker { id } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or(MetaError::UnknownBroker(*id))?;
                broker.fenced = false;
                self.unfence(*id);
                Ok(())
            }
            Command::CreateTopic {
                name,
                topic_id,
                assignment,
                configs,
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetaError::TopicExists(name.clone()));
                }
                if assignment.is_empty() || assignment.iter().any(|r| r.is_empty()) {
                    return Err(MetaError::InvalidRequest("empty replica assignment".into()));
                }
                // Checked again here: two creations validated at once must not both pass.
                self.check_replica_load(assignment)?;
                let partitions = assignment
                    .iter()
                    .map(|replicas| {
                        let isr: Vec<NodeId> = replicas
                            .iter()
                            .copied()
                            .filter(|r| self.is_live(*r))
                            .collect();
                        PartitionInfo {
                            replicas: replicas.clone(),
                            leader: isr.first().copied(),
                            leader_epoch: 0,
                            partition_epoch: 0,
                            isr: if isr.is_empty() {
                                replicas.clone()
                            } else {
                                isr
                            },
                        }
                    })
                    .collect();
                self.topics.insert(
                    name.clone(),
                    TopicInfo {
                        name: name.clone(),
                        id: topic_id.clone(),
                        configs: configs.clone(),
                        partitions,
                    },
                );
                Ok(())
            }
            Command::DeleteTopic { name } => self
                .topics
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| MetaError::UnknownTopic(name.clone())),
            Command::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
                added,
            } => {
                let live = self.live_ids();
                for (broker, given) in added {
                    self.check_broker_epoch(*broker, *given)?;
                }
                let p = self.partition_mut(topic, *partition)?;
                let stale = |reason: String| MetaError::StalePartition {
                    topic: topic.clone(),
                    partition: *partition,
                    reason,
                };
                if p.leader != Some(*leader) || p.leader_epoch != *leader_epoch {
                    return Err(stale(format!(
                        "request from leader {leader} epoch {leader_epoch}, current leader {:?} epoch {}",
                        p.leader, p.leader_epoch
                    )));
                }
                if p.partition_epoch != *partition_epoch {
                    return Err(stale(format!(
                        "partition epoch {partition_epoch}, current {}",
                        p.partition_epoch
                    )));
                }
                if !isr.contains(leader) {
                    return Err(MetaError::InvalidRequest(
                        "the ISR must contain the leader".into(),
                    ));
                }
                if let Some(r) = isr.iter().find(|r| !p.replicas.contains(r)) {
                    return Err(MetaError::InvalidRequest(format!(
                        "broker {r} is not a replica"
                    )));
                }
                let added_fenced = isr.iter().find(|r| !p.isr.contains(r) && !live.contains(r));
                if let Some(r) = added_fenced {
                    return Err(MetaError::InvalidRequest(format!("broker {r} is fenced")));
                }
                let mut new_isr = isr.clone();
                new_isr.sort_unstable();
                new_isr.dedup();
                p.isr = new_isr;
                p.partition_epoch += 1;
                Ok(())
            }
            Command::ElectLeader {
                topic,
                partition,
                unclean,
            } => {
                let live = self.live_ids();
                let p = self.partition_mut(topic, *partition)?;
                let from_isr = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| p.isr.contains(r) && live.contains(r));
                let chosen = from_isr.or_else(|| {
                    unclean
                        .then(|| p.replicas.iter().copied().find(|r| live.contains(r)))
                        .flatten()
                });
                let Some(new_leader) = chosen else {
                    return Err(MetaError::NoEligibleLeader {
                        topic: topic.clone(),
                        partition: *partition,
                    });
                };
                if from_isr.is_none() {
                    p.isr = vec![new_leader];
                }
                if p.leader != Some(new_leader) {
                    p.leader = Some(new_leader);
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
                Ok(())
            }
            Command::AlterTopicConfig { name, set, delete } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                for key in delete {
                    topic.configs.remove(key);
                }
                topic
                    .configs
                    .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(())
            }
            Command::UnregisterBroker { id } => {
                let broker = self.brokers.get(id).ok_or(MetaError::UnknownBroker(*id))?;
                if !broker.fenced {
                    return Err(MetaError::InvalidRequest(format!(
                        "broker {id} is active; only a fenced broker can be unregistered"
                    )));
                }
                self.brokers.remove(id);
                Ok(())
            }
            Command::AllocateProducerIds {
                broker,
                broker_epoch,
            } => {
                self.check_broker_epoch(*broker, *broker_epoch)?;
                let Some(next) = self.next_producer_id.checked_add(PRODUCER_ID_BLOCK) else {
                    return Err(MetaError::Internal("producer ids are exhausted".into()));
                };
                self.next_producer_id = next;
                Ok(())
            }
        }
    }

    fn is_live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<&mut PartitionInfo, MetaError> {
        let t = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| MetaError::UnknownTopic(topic.to_owned()))?;
        t.partitions
            .get_mut(partition as usize)
            .ok_or_else(|| MetaError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
    }

    /// Marks `id` fenced: it leaves every ISR where others remain, and each partition it led
    /// gets the first live replica of its ISR (preferred order) as leader, or none.
    fn fence(&mut self, id: NodeId) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = true;
        }
        let live = self.live_ids();
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                let mut changed = false;
                if p.isr.contains(&id) && p.isr.len() > 1 {
                    p.isr.retain(|r| *r != id);
                    changed = true;
                }
                if p.leader == Some(id) {
                    p.leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| p.isr.contains(r) && live.contains(r));
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// `id` is live again: leaderless partitions whose ISR holds it get it as leader.
    fn unfence(&mut self, id: NodeId) {
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if p.leader.is_none() && p.isr.contains(&id) {
                    p.leader = Some(id);
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// StaleBrokerEpoch unless `given` is broker `broker`'s current registration epoch (an
    /// ISR expansion or an id block asked for by an earlier incarnation).
    fn check_broker_epoch(&self, broker: NodeId, given: u64) -> Result<(), MetaError> {
        let current = self.brokers.get(&broker).map_or(0, |b| b.epoch);
        if current == given {
            return Ok(());
        }
        Err(MetaError::StaleBrokerEpoch {
            broker,
            given,
            current,
        })
    }

    /// Ids of the unfenced brokers.
    fn live_ids(&self) -> BTreeSet<NodeId> {
        self.live_brokers().map(|b| b.id).collect()
    }

    /// Unfenced brokers.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Refuses a new topic's `assignment` if it would put more than
    /// [`MAX_REPLICAS_PER_BROKER`] partition replicas on any broker, counting every topic's.
    pub fn check_replica_load(&self, assignment: &[Vec<NodeId>]) -> Result<(), MetaError> {
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        let existing = self
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| &p.replicas));
        for replicas in existing.chain(assignment.iter()) {
            for r in replicas {
                *load.entry(*r).or_default() += 1;
            }
        }
        match load.into_iter().find(|(_, n)| *n > MAX_REPLICAS_PER_BROKER) {
            Some((broker, count)) => Err(MetaError::TooManyReplicas {
                broker,
                count,
                limit: MAX_REPLICAS_PER_BROKER,
            }),
            None => Ok(()),
        }
    }

    /// Chooses replicas for `partitions` new partitions with `replication_factor` replicas each
    /// among the live brokers: replicas and preferred leaders spread evenly, consecutive
    /// replicas of a partition on different racks when racks are given (brokers are ordered by
    /// alternating racks). The starting broker rotates with the number of partitions already in
    /// the cluster, so many small topics do not all lead on the same broker.
    pub fn place_replicas(
        &self,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<Vec<Vec<NodeId>>, MetaError> {
        if partitions == 0 || partitions > 100_000 {
            return Err(MetaError::InvalidPartitions(partitions.into()));
        }
        let mut by_rack: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
        for b in self.live_brokers() {
            by_rack
                .entry(b.rack.as_deref().unwrap_or(""))
                .or_default()
                .push(b.id);
        }
        let live: usize = by_rack.values().map(Vec::len).sum();
        if replication_factor == 0 || replication_factor as usize > live {
            return Err(MetaError::InvalidReplicationFactor {
                factor: replication_factor.into(),
                reason: format!("must be between 1 and the number of live brokers ({live})"),
            });
        }
        // Interleave racks: r0b0, r1b0, r2b0, r0b1, …
        let mut ordered = Vec::with_capacity(live);
        let depth = by_rack.values().map(Vec::len).max().unwrap_or(0);
        for i in 0..depth {
            for brokers in by_rack.values() {
                if let Some(b) = brokers.get(i) {
                    ordered.push(*b);
                }
            }
        }
        let existing: usize = self.topics.values().map(|t| t.partitions.len()).sum();
        let n = ordered.len();
        let racks = by_rack.len();
        Ok((0..partitions as usize)
            .map(|p| {
                let first = (existing + p) % n;
                // Kafka's scheme: followers follow the leader at a shift that changes every
                // round of n partitions, so followers spread too. With racks, keep the shift at
                // zero: neighbours in the interleaved order sit on different racks.
                let shift = if racks > 1 {
                    0
                } else {
                    ((existing + p) / n) % (n - 1).max(1)
                };
                (0..replication_factor as usize)
                    .map(|j| {
                        if j == 0 {
                            ordered[first]
                        } else {
                            ordered[(first + 1 + (shift + j - 1) % (n - 1).max(1)) % n]
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(brokers: &[(NodeId, Option<&str>)]) -> MetadataState {
        let mut s = MetadataState::default();
        let mut index = 0;
        for (id, rack) in brokers {
            index += 1;
            let reg = Command::RegisterBroker {
                id: *id,
                address: format!("127.0.0.1:{}", 9700 + id),
                rack: rack.map(str::to_owned),
                incarnation: 7,
            };
            s.apply(index, &reg).unwrap();
            index += 1;
            s.apply(index, &Command::UnfenceBroker { id: *id }).unwrap();
        }
        s
    }

    fn create(s: &mut MetadataState, name: &str, partitions: u32, rf: u32) {
        let assignment = s.place_replicas(partitions, rf).unwrap();
        let cmd = Command::CreateTopic {
            name: name.into(),
            topic_id: "0".repeat(32),
            assignment,
            configs: BTreeMap::new(),
        };
        s.apply(s.version + 1, &cmd).unwrap();
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "ü", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn placement_spreads_leaders_and_replicas_evenly() {
        let s = cluster(&[(1, None), (2, None), (3, None)]);
        let assignment = s.place_replicas(6, 3).unwrap();
        let mut leaders = BTreeMap::new();
        for replicas in &assignment {
            let unique: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(unique.len(), 3, "{replicas:?}");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        assert!(s.place_replicas(1, 4).is_err());
        assert!(s.place_replicas(0, 1).is_err());
    }

    #[test]
    fn placement_puts_replicas_on_different_racks() {
        let s = cluster(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        for replicas in s.place_replicas(8, 2).unwrap() {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|r| s.brokers[r].rack.clone().unwrap_or_default())
                .collect();
            assert_eq!(racks.len(), 2, "{replicas:?}");
        }
    }

    #[test]
    fn fencing_a_leader_elects_from_the_isr_and_bumps_epochs() {
        let mut s = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut s, "t", 3, 3);
        let before = s.topics["t"].partitions.clone();
        let led_by_1: Vec<usize> = (0..3).filter(|i| before[*i].leader == Some(1)).collect();
        s.apply(s.version + 1, &Command::FenceBroker { id: 1 })
            .unwrap();
        for (i, p) in s.topics["t"].partitions.iter().enumerate() {
            assert!(!p.isr.contains(&1));
            assert_ne!(p.leader, Some(1));
            assert!(p.leader.is_some());
            if led_by_1.contains(&i) {
                assert_eq!(p.leader_epoch, before[i].leader_epoch + 1);
            } else {
                assert_eq!(p.leader_epoch, before[i].leader_epoch);
            }
        }
    }

    #[test]
    fn only_a_fenced_broker_is_unregistered_and_it_leaves_only_the_broker_list() {
        let mut s = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut s, "t", 3, 3);
        let before = s.clone();
        let refused = s.apply(s.version + 1, &Command::UnregisterBroker { id: 2 });
        assert!(
            matches!(refused, Err(MetaError::InvalidRequest(_))),
            "{refused:?}"
        );
        assert_eq!(
            s.apply(s.version + 1, &Command::UnregisterBroker { id: 9 }),
            Err(MetaError::UnknownBroker(9))
        );
        assert_eq!(s.brokers, before.brokers);
        s.apply(s.version + 1, &Command::FenceBroker { id: 2 })
            .unwrap();
        let fenced = s.topics.clone();
        s.apply(s.version + 1, &Command::UnregisterBroker { id: 2 })
            .unwrap();
        assert_eq!(s.brokers.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.topics, fenced, "partitions keep it as a replica");
    }

    #[test]
    fn a_topic_that_would_overload_a_broker_is_refused() {
        let mut s = cluster(&[(1, None), (2, None)]);
        create(&mut s, "t", 4, 2);
        let fits = vec![vec![1, 2]; MAX_REPLICAS_PER_BROKER - 4];
        s.check_replica_load(&fits).unwrap();
        let over = vec![vec![1]; MAX_REPLICAS_PER_BROKER - 3];
        let refused = s.check_replica_load(&over).unwrap_err();
        assert!(
            matches!(refused, MetaError::TooManyReplicas { broker: 1, count, .. } if count == MAX_REPLICAS_PER_BROKER + 1),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("add brokers"), "{refused}");
    }

    #[test]
    fn producer_id_blocks_follow_each_other_and_need_the_current_broker_epoch() {
        let mut s = cluster(&[(1, None), (2, None)]);
        let epoch = |s: &MetadataState, id| s.brokers[&id].epoch;
        for broker in [1, 2, 1] {
            let before = s.next_producer_id;
            let cmd = Command::AllocateProducerIds {
                broker,
                broker_epoch: epoch(&s, broker),
            };
            s.apply(s.version + 1, &cmd).unwrap();
            assert_eq!(s.next_producer_id, before + PRODUCER_ID_BLOCK);
        }
        let stale = Command::AllocateProducerIds {
            broker: 2,
            broker_epoch: epoch(&s, 2) + 1,
        };
        assert!(matches!(
            s.apply(s.version + 1, &stale),
            Err(MetaError::StaleBrokerEpoch { broker: 2, .. })
        ));
        assert_eq!(
            s.next_producer_id,
            3 * PRODUCER_ID_BLOCK,
            "a refusal hands out nothing"
        );
    }

    #[test]
    fn the_last_isr_member_keeps_its_place_and_leads_again_when_back() {
        let mut s = cluster(&[(1, None)]);
        create(&mut s, "solo", 1, 1);
        s.apply(s.version + 1, &Command::FenceBroker { id: 1 })
            .unwrap();
        let p = &s.topics["solo"].partitions[0];
        assert_eq!((p.leader, p.isr.clone()), (None, vec![1]));
        s.apply(s.version + 1, &Command::UnfenceBroker { id: 1 })
            .unwrap();
        let p = &s.topics["solo"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch), (Some(1), 2));
    }

    #[test]
    fn alter_partition_is_guarded_by_epochs() {
        let mut s = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut s, "t", 1, 3);
        let p = s.topics["t"].partitions[0].clone();
        let leader = p.leader.unwrap();
        let shrink: Vec<NodeId> = vec![leader];
        let cmd = |pe| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: pe,
            isr: shrink.clone(),
            added: vec![],
        };
        s.apply(s.version + 1, &cmd(p.partition_epoch)).unwrap();
        assert_eq!(s.topics["t"].partitions[0].isr, shrink);
        let err = s.apply(s.version + 1, &cmd(p.partition_epoch)).unwrap_err();
        assert!(matches!(err, MetaError::StalePartition { .. }), "{err}");
    }

    /// KIP-903: a leader saw broker 3 fetch in its first incarnation; broker 3 restarts (a new
    /// registration, perhaps with an empty disk), catches up its metadata and is unfenced. The
    /// expansion computed from the old incarnation's fetch must not put it back in the ISR.
    #[test]
    fn an_isr_expansion_from_a_previous_incarnation_is_refused() {
        let mut s = cluster(&[(1, None), (2, None), (3, None)]);
        create(&mut s, "t", 1, 3);
        let p = s.topics["t"].partitions[0].clone();
        let leader = p.leader.unwrap();
        let follower = *p.replicas.iter().find(|r| **r != leader).unwrap();
        let old_epoch = s.brokers[&follower].epoch;
        let shrink = Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: p.isr.iter().copied().filter(|r| *r != follower).collect(),
            added: vec![],
        };
        s.apply(s.version + 1, &shrink).unwrap();
        let reregister = Command::RegisterBroker {
            id: follower,
            address: "x".into(),
            rack: None,
            incarnation: 4242,
        };
        s.apply(s.version + 1, &reregister).unwrap();
        s.apply(s.version + 1, &Command::UnfenceBroker { id: follower })
            .unwrap();
        let p = s.topics["t"].partitions[0].clone();
        let mut isr = p.isr.clone();
        isr.push(follower);
        let expand = |epoch| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.clone(),
            added: vec![(follower, epoch)],
        };
        let err = s.apply(s.version + 1, &expand(old_epoch)).unwrap_err();
        assert!(matches!(err, MetaError::StaleBrokerEpoch { .. }), "{err}");
        assert!(!s.topics["t"].partitions[0].isr.contains(&follower));
        let current = s.brokers[&follower].epoch;
        s.apply(s.version + 1, &expand(current)).unwrap();
        assert!(s.topics["t"].partitions[0].isr.contains(&follower));
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut s = cluster(&[(1, None)]);
        create(&mut s, "t", 1, 1);
        let before = s.clone();
        let dup = Command::CreateTopic {
            name: "t".into(),
            topic_id: "1".repeat(32),
            assignment: vec![vec![1]],
            configs: BTreeMap::new(),
        };
        assert_eq!(s.apply(99, &dup), Err(MetaError::TopicExists("t".into())));
        assert!(s
            .apply(
                100,
                &Command::DeleteTopic {
                    name: "nope".into()
                }
            )
            .is_err());
        assert_eq!(s.topics, before.topics);
        assert_eq!(s.version, 100);
    }

    #[test]
    fn a_restarted_broker_is_fenced_until_it_catches_up() {
        let mut s = cluster(&[(1, None), (2, None)]);
        create(&mut s, "t", 2, 2);
        let reg = Command::RegisterBroker {
            id: 1,
            address: "x".into(),
            rack: None,
            incarnation: 8,
        };
        s.apply(s.version + 1, &reg).unwrap();
        assert!(s.brokers[&1].fenced);
        for p in &s.topics["t"].partitions {
            assert_eq!(p.leader, Some(2));
            assert_eq!(p.isr, vec![2]);
        }
    }
}
