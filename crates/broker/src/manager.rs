//! The replica manager: the partitions this broker holds, kept in step with the metadata.
//!
//! It follows the metadata image (the local replica of the metadata log) and reacts to every
//! change in log order: it opens logs for new replicas, becomes leader or follower with the
//! leader epoch the controller chose, (re)starts follower fetchers, adopts ISR changes, and
//! deletes the logs of partitions it no longer holds. Alongside, it asks the controller to
//! shrink the ISR of partitions it leads when a follower lags longer than
//! `replica.lag.time.max.ms`, and runs log upkeep (flush.ms, retention, checkpoints).
//!
//! It acts only for this process's own registration: until the metadata shows this broker
//! registered with its current incarnation, it opens no log and neither leads nor follows
//! anything. A restarted broker's local metadata still names it leader of its old epochs; the
//! registration of the new incarnation fences the old one and moves those leaderships on, so
//! waiting for it means a restarted broker never serves as leader of an epoch it may have lost
//! records of (Kafka's broker epochs).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use weir_common::sync::{MutexExt, RwLockExt};

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use weir_common::now_ms;
use weir_common::topic_config::{self, TopicConfig};
use weir_meta::{BrokerInfo, MetadataState, NodeId, TopicInfo};
use weir_proto::channel::{Channels, Profile};
use weir_proto::controller::v1::controller_client::ControllerClient;
use weir_storage::LogConfig;

use crate::partition::{retired_path, split_retired, Partition};
use crate::replication::{follower, isr};

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's id.
    pub broker_id: NodeId,
    /// Where partition directories live (`<data-dir>/logs`).
    pub logs_dir: PathBuf,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the
    /// ISR. Default 10 s.
    pub replica_lag_time_max: Duration,
    /// Controller addresses, for AlterPartition and admin forwarding.
    pub controllers: Vec<String>,
    /// Largest window of disk blocks reserved ahead of an active segment
    /// (`LogConfig::preallocate_bytes`; 0: off). Default 256 MiB.
    pub log_preallocate_bytes: u64,
    /// `producer.id.expiration.ms` (`LogConfig::producer_id_expiration`). Default 1 day.
    pub producer_id_expiration: Duration,
    /// Idempotent producer ids remembered per partition (`LogConfig::max_producers`).
    pub max_producers_per_partition: usize,
    /// Segments a partition keeps before it stops rolling (`LogConfig::max_segments`).
    pub max_segments_per_partition: usize,
    /// The segments open across this broker's logs and the most allowed before they stop
    /// rolling (`LogConfig::node_segments`; `--max-segments-per-node`).
    pub node_segments: weir_storage::NodeSegments,
    /// This process's incarnation, as the broker registers it (see
    /// [`crate::lifecycle::new_incarnation`]): the manager acts only once the metadata shows it.
    pub incarnation: u64,
    /// Local address this broker's connections to leaders and controllers come from
    /// (`--source-address`); `None`: the operating system chooses.
    pub source_address: Option<std::net::IpAddr>,
    /// How long a removed replica's log is kept (renamed `<dir>.deleted-<ms>`) before it is
    /// deleted (Kafka's `file.delete.delay.ms`; default [`DELETE_DELAY`]). A metadata state
    /// that no longer names a topic — a bad snapshot, a controller bug — must not cost its data
    /// at once: if the topic comes back with the same id within this time, its log is restored
    /// as it was.
    pub delete_delay: Duration,
    /// The server's defaults for every topic (`--topic-config-default`, validated): a topic's
    /// own overrides win over them, and they over the built-in defaults.
    pub topic_defaults: BTreeMap<String, String>,
}

/// Topic configs (the topic's overrides over the server's defaults) over this broker's log
/// settings as a log config (keys were validated by the controller) and `min.insync.replicas`.
pub fn log_config_for(broker: &BrokerConfig, topic: &TopicInfo) -> (LogConfig, usize) {
    let configs = topic_config::merged(&topic.configs, &broker.topic_defaults);
    let mut config = LogConfig {
        preallocate_bytes: broker.log_preallocate_bytes,
        producer_id_expiration: broker.producer_id_expiration,
        max_producers: broker.max_producers_per_partition,
        max_segments: broker.max_segments_per_partition,
        node_segments: broker.node_segments.clone(),
        ..LogConfig::default()
    };
    for (key, value) in &configs {
        match TopicConfig::parse(key, value) {
            Ok(parsed) => config.apply(parsed),
            Err(e) => {
                tracing::warn!(topic = %topic.name, error = %e, "ignoring invalid topic config")
            }
        }
    }
    let min_insync = topic_config::min_insync_replicas(&configs) as usize;
    (config, min_insync)
}

type Key = (String, u32);

/// Default of [`BrokerConfig::delete_delay`]: Kafka's `file.delete.delay.ms` (60 s).
pub const DELETE_DELAY: Duration = Duration::from_secs(60);

/// Brings back the newest retired log of `dir` that belongs to topic id `id`, if any.
/// Blocking.
fn restore_retired(dir: &std::path::Path, id: &str) {
    let (Some(parent), Some(base)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let base = base.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let newest = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (stem, at) = split_retired(&name)?;
            let owner = std::fs::read_to_string(e.path().join("partition.metadata")).ok()?;
            (stem == base && owner.trim() == id).then_some((at, e.path()))
        })
        .max_by_key(|(at, _)| *at);
    if let Some((at, retired)) = newest {
        match std::fs::rename(&retired, dir) {
            Ok(()) => tracing::warn!(
                dir = %dir.display(),
                retired_ms_ago = now_ms().saturating_sub(at),
                "the topic is back: restored its retired log"
            ),
            Err(e) => {
                tracing::warn!(dir = %retired.display(), error = %e, "restoring a retired log")
            }
        }
    }
}

/// Tells who leads the controller quorum right now (node id), as this node knows it.
pub type ControllerLeader = Arc<dyn Fn() -> Option<NodeId> + Send + Sync>;

/// The partitions of this broker.
pub struct ReplicaManager {
    config: BrokerConfig,
    partitions: RwLock<HashMap<Key, Arc<Partition>>>,
    fetchers: Mutex<HashMap<Key, JoinHandle<()>>>,
    metadata: watch::Receiver<Arc<MetadataState>>,
    /// Channels to partition leaders (replica fetches).
    leaders: Channels,
    /// Channels to controllers (AlterPartition, forwarded admin requests).
    controllers: Channels,
    next_controller: Mutex<usize>,
    controller_leader: ControllerLeader,
    /// Whether a retired partition directory may be waiting for deletion (true at start: one
    /// may be left from before a restart).
    retired: std::sync::atomic::AtomicBool,
}

impl ReplicaManager {
    /// A manager following `metadata`; `controller_leader` answers who leads the quorum (for
    /// clients' Metadata).
    pub fn new(
        config: BrokerConfig,
        metadata: watch::Receiver<Arc<MetadataState>>,
        controller_leader: ControllerLeader,
    ) -> Arc<Self> {
        let source = config.source_address;
        Arc::new(Self {
            controller_leader,
            config,
            partitions: RwLock::new(HashMap::new()),
            fetchers: Mutex::new(HashMap::new()),
            metadata,
            leaders: Channels::new(Profile::REPLICATION).with_source(source),
            controllers: Channels::new(Profile::CONTROLLER).with_source(source),
            next_controller: Mutex::new(0),
            retired: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The controller leader's node id, if known.
    pub fn controller_leader(&self) -> Option<NodeId> {
        (self.controller_leader)()
    }

    /// This broker's id.
    pub fn broker_id(&self) -> NodeId {
        self.config.broker_id
    }

    /// The metadata image.
    pub fn metadata(&self) -> Arc<MetadataState> {
        self.metadata.borrow().clone()
    }

    /// The local replica of a partition.
    pub fn partition(&self, topic: &str, index: u32) -> Option<Arc<Partition>> {
        self.partitions
            .read_locked()
            .get(&(topic.to_owned(), index))
            .cloned()
    }

    /// Every local replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read_locked().values().cloned().collect()
    }

    /// The address of broker `id` from the metadata.
    pub fn broker_address(&self, id: NodeId) -> Option<String> {
        self.metadata
            .borrow()
            .brokers
            .get(&id)
            .map(|b| b.address.clone())
    }

    /// The address of the current leader of a partition, from the metadata.
    pub fn leader_address(&self, topic: &str, index: u32) -> Option<String> {
        let leader = {
            let state = self.metadata.borrow();
            state
                .topics
                .get(topic)?
                .partitions
                .get(index as usize)?
                .leader?
        };
        self.broker_address(leader)
    }

    /// The channel to a partition leader's broker listener (`None`: the address is invalid).
    pub fn leader_channel(&self, addr: &str) -> Option<Channel> {
        self.leaders.get(addr).ok()
    }

    /// `replica.lag.time.max.ms`.
    pub fn replica_lag_time_max(&self) -> Duration {
        self.config.replica_lag_time_max
    }

    /// How many controllers the broker knows.
    pub fn controller_count(&self) -> usize {
        self.config.controllers.len()
    }

    /// A controller client (round robin; any controller forwards to the leader).
    pub fn controller(&self) -> Option<ControllerClient<Channel>> {
        if self.config.controllers.is_empty() {
            return None;
        }
        let i = {
            let mut next = self.next_controller.locked();
            *next = next.wrapping_add(1);
            *next % self.config.controllers.len()
        };
        self.controllers
            .get(&self.config.controllers[i])
            .ok()
            .map(ControllerClient::new)
    }

    /// Follows the metadata until `shutdown`, then stops fetchers and closes every log
    /// cleanly.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut metadata = self.metadata.clone();
        let mut upkeep = tokio::time::interval(Duration::from_secs(1));
        upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let isr_period = (self.config.replica_lag_time_max / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut isr_check = tokio::time::interval(isr_period);
        isr_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_checkpoint = Instant::now();
        let first = metadata.borrow_and_update().clone();
        self.apply_metadata(&first, &shutdown).await;
        loop {
            tokio::select! {
                changed = metadata.changed() => {
                    if changed.is_err() { break; }
                    let state = metadata.borrow_and_update().clone();
                    self.apply_metadata(&state, &shutdown).await;
                }
                _ = isr_check.tick() => isr::check_shrink(&self),
                _ = upkeep.tick() => {
                    let checkpoint = last_checkpoint.elapsed() >= Duration::from_secs(30);
                    if checkpoint { last_checkpoint = Instant::now(); }
                    self.upkeep(checkpoint).await;
                }
                _ = shutdown.changed() => break,
            }
        }
        self.close().await;
    }

    /// Deletes retired partition directories older than the delete delay; notes whether any
    /// is left (then the next upkeep looks again).
    async fn sweep_retired(&self) {
        use std::sync::atomic::Ordering;
        if !self.retired.swap(false, Ordering::SeqCst) {
            return;
        }
        let logs = self.config.logs_dir.clone();
        let delay = i64::try_from(self.config.delete_delay.as_millis()).unwrap_or(i64::MAX);
        let left = tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&logs) else {
                return false;
            };
            let now = now_ms();
            let mut left = false;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((_, at)) = split_retired(&name) else {
                    continue;
                };
                if now.saturating_sub(at) < delay {
                    left = true;
                    continue;
                }
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => tracing::info!(dir = %entry.path().display(), "deleted a retired partition log"),
                    Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "deleting a retired partition log"),
                }
            }
            left
        })
        .await
        .unwrap_or(true);
        if left {
            self.retired.store(true, Ordering::SeqCst);
        }
    }

    async fn upkeep(&self, checkpoint: bool) {
        self.sweep_retired().await;
        let partitions = self.all_partitions();
        let now_ms = now_ms();
        let result = tokio::task::spawn_blocking(move || {
            for p in partitions {
                if let Err(e) = p.maintain(now_ms, checkpoint) {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "log upkeep failed");
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "log upkeep task failed");
        }
    }

    async fn close(&self) {
        for (_, task) in self.fetchers.locked().drain() {
            task.abort();
        }
        let partitions = self.all_partitions();
        let _ = tokio::task::spawn_blocking(move || {
            for p in partitions {
                if let Err(e) = p.close() {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "closing log failed");
                }
            }
        })
        .await;
    }

    fn stop_fetcher(&self, key: &Key) {
        if let Some(task) = self.fetchers.locked().remove(key) {
            task.abort();
        }
    }

    /// This process's registration in `state`, if `state` shows it (same incarnation).
    fn own_registration<'a>(&self, state: &'a MetadataState) -> Option<&'a BrokerInfo> {
        state
            .brokers
            .get(&self.config.broker_id)
            .filter(|b| b.incarnation == self.config.incarnation)
    }

    /// This broker's epoch (its current registration), once the metadata shows it; 0 before.
    pub fn broker_epoch(&self) -> u64 {
        self.own_registration(&self.metadata.borrow())
            .map_or(0, |b| b.epoch)
    }

    /// Brings the local replicas in line with `state` — once `state` shows this process's
    /// registration (see the module docs); before that, nothing.
    async fn apply_metadata(
        self: &Arc<Self>,
        state: &MetadataState,
        shutdown: &watch::Receiver<bool>,
    ) {
        if self.own_registration(state).is_none() {
            tracing::debug!(
                version = state.version,
                "metadata does not show this broker's registration yet; not acting on it"
            );
            return;
        }
        let me = self.config.broker_id;
        let mut wanted = Vec::new();
        for (name, topic) in &state.topics {
            for (i, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&me) {
                    wanted.push((name.clone(), i as u32));
                }
            }
        }
        // Replicas to drop: topic deleted, recreated under a new id, or reassigned.
        let stale: Vec<(Key, Arc<Partition>)> = {
            let partitions = self.partitions.read_locked();
            partitions
                .iter()
                .filter(|(key, part)| {
                    let same_topic = state
                        .topics
                        .get(&key.0)
                        .is_some_and(|t| t.id == part.topic_id);
                    !same_topic || !wanted.contains(key)
                })
                .map(|(k, p)| (k.clone(), Arc::clone(p)))
                .collect()
        };
        for (key, part) in stale {
            self.stop_fetcher(&key);
            self.partitions.write_locked().remove(&key);
            let why = match state.topics.get(&key.0) {
                None => "the metadata no longer has the topic",
                Some(t) if t.id != part.topic_id => "the topic was recreated under a new id",
                Some(_) => "this broker is no longer a replica",
            };
            self.retired
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let retired = tokio::task::spawn_blocking(move || part.retire(now_ms())).await;
            match retired {
                Ok(Ok(dir)) => tracing::warn!(
                    topic = %key.0,
                    partition = key.1,
                    reason = why,
                    kept_in = %dir.display(),
                    "removing replica; its log is kept for {} ms, then deleted",
                    self.config.delete_delay.as_millis()
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "retiring a removed replica's log failed"),
                Err(e) => tracing::warn!(error = %e, "retiring a removed replica's log failed"),
            }
        }

        // Open the logs of new replicas, several at a time (each costs a few fsyncs), and
        // give up early when shutting down.
        let missing: Vec<(Key, String, LogConfig)> = wanted
            .iter()
            .filter(|key| self.partition(&key.0, key.1).is_none())
            .filter_map(|key| {
                let topic = state.topics.get(&key.0)?;
                Some((
                    key.clone(),
                    topic.id.clone(),
                    log_config_for(&self.config, topic).0,
                ))
            })
            .collect();
        let mut opens = futures::stream::iter(missing)
            .map(|(key, id, config)| async move { self.open_partition(&key, &id, config).await })
            .buffer_unordered(8);
        while opens.next().await.is_some() {
            if *shutdown.borrow() {
                return;
            }
        }
        drop(opens);

        for key in wanted {
            let Some(topic) = state.topics.get(&key.0) else {
                continue;
            };
            let Some(info) = topic.partitions.get(key.1 as usize) else {
                continue;
            };
            let (log_config, min_insync) = log_config_for(&self.config, topic);
            let Some(part) = self.partition(&key.0, key.1) else {
                continue; // its log could not be opened (logged)
            };
            part.set_config(log_config, min_insync);
            match info.leader {
                Some(leader) if leader == me => {
                    self.stop_fetcher(&key);
                    let (epoch, partition_epoch) = (info.leader_epoch, info.partition_epoch);
                    let (replicas, isr) = (info.replicas.clone(), info.isr.clone());
                    let leading = Arc::clone(&part);
                    let made = tokio::task::spawn_blocking(move || {
                        leading.make_leader(epoch, partition_epoch, &replicas, &isr, min_insync)
                    })
                    .await;
                    match made {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(topic = %key.0, partition = key.1, epoch, error = %e, "cannot become leader")
                        }
                        Err(e) => {
                            tracing::error!(topic = %key.0, partition = key.1, error = %e, "becoming leader panicked")
                        }
                    }
                }
                leader => {
                    let changed = part.make_follower(leader, info.leader_epoch);
                    let running = self
                        .fetchers
                        .locked()
                        .get(&key)
                        .is_some_and(|t| !t.is_finished());
                    if changed || (leader.is_some() && !running) {
                        self.stop_fetcher(&key);
                        if let Some(leader) = leader {
                            let task = tokio::spawn(follower::run(
                                Arc::clone(self),
                                Arc::clone(&part),
                                leader,
                                info.leader_epoch,
                            ));
                            self.fetchers.locked().insert(key.clone(), task);
                        }
                    }
                }
            }
        }
    }

    async fn open_partition(
        &self,
        key: &Key,
        topic_id: &str,
        config: LogConfig,
    ) -> Option<Arc<Partition>> {
        let dir = self.config.logs_dir.join(format!("{}-{}", key.0, key.1));
        let (topic, index, id, me) = (
            key.0.clone(),
            key.1,
            topic_id.to_owned(),
            self.config.broker_id,
        );
        let opened = tokio::task::spawn_blocking(move || {
            // A directory left by an earlier topic of the same name is not this topic's log.
            let id_file = dir.join("partition.metadata");
            if let Ok(existing) = std::fs::read_to_string(&id_file) {
                if existing.trim() != id {
                    tracing::warn!(dir = %dir.display(), "log belongs to an older topic of the same name; retiring it");
                    let _ = std::fs::rename(&dir, retired_path(&dir, now_ms()));
                }
            }
            if !dir.exists() {
                restore_retired(&dir, &id);
            }
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(&id_file, &id).map_err(|e| e.to_string())?;
            Partition::open(&dir, &topic, index, &id, me, config).map_err(|e| e.to_string())
        })
        .await;
        match opened {
            Ok(Ok(part)) => {
                let part = Arc::new(part);
                self.partitions
                    .write_locked()
                    .insert(key.clone(), Arc::clone(&part));
                Some(part)
            }
            Ok(Err(e)) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot open partition log");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "opening a partition log panicked");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::RETIRED;

    #[test]
    fn a_retired_log_comes_back_only_for_its_own_topic_id() {
        let logs = tempfile::tempdir().unwrap();
        let dir = logs.path().join("t-0");
        let retire = |id: &str, at: u64| {
            let retired = logs.path().join(format!("t-0{RETIRED}{at}"));
            std::fs::create_dir_all(&retired).unwrap();
            std::fs::write(retired.join("partition.metadata"), id).unwrap();
        };
        retire("other", 300);
        restore_retired(&dir, "mine");
        assert!(!dir.exists(), "another topic's log was restored");
        retire("mine", 100);
        retire("mine", 200);
        restore_retired(&dir, "mine");
        assert_eq!(
            std::fs::read_to_string(dir.join("partition.metadata")).unwrap(),
            "mine"
        );
        assert!(
            logs.path().join(format!("t-0{RETIRED}100")).exists(),
            "not the newest"
        );
        assert!(!logs.path().join(format!("t-0{RETIRED}200")).exists());
        assert_eq!(
            split_retired(&format!("a.b-3{RETIRED}42")),
            Some(("a.b-3", 42))
        );
        assert_eq!(split_retired("a.b-3"), None);
    }
}
