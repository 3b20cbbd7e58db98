//! The cluster as the client sees it: one gRPC channel per broker address and a cached copy of
//! the `Metadata` answer (brokers, topics, partition leaders), refreshed on demand.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use weir_common::sync::{MutexExt, RwLockExt};

use tonic::transport::Channel;
use weir_proto::broker::v1 as pb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::channel::{Channels, Profile};
use weir_proto::common::v1::ErrorCode;

use crate::config::ClientConfig;
use crate::error::{check, Error, Result};

/// Refreshes happen at most this often.
pub(crate) const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// One partition's routing facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionInfo {
    pub leader: Option<u64>,
    pub leader_epoch: i32,
    pub replicas: Vec<u64>,
    pub isr: Vec<u64>,
}

/// One topic's partitions, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicInfo {
    pub id: String,
    pub partitions: Vec<PartitionInfo>,
}

/// One Metadata answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Broker id → address.
    pub brokers: HashMap<u64, String>,
    pub topics: HashMap<String, TopicInfo>,
    /// Bumped by every refresh.
    pub generation: u64,
}

impl Snapshot {
    /// The leader's id and address of a partition.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<(u64, &str)> {
        let p = self.topics.get(topic)?.partitions.get(partition as usize)?;
        let id = p.leader?;
        Some((id, self.brokers.get(&id)?.as_str()))
    }

    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.topics.get(topic).map(|t| t.partitions.len())
    }
}

/// Connections and the metadata cache, shared by every client built on one configuration.
pub(crate) struct Cluster {
    pub config: ClientConfig,
    channels: Channels,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serializes refreshes; holds when the last one finished.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// The address that answered last, tried first.
    last_good: Mutex<Option<String>>,
}

impl Cluster {
    /// Connects: fetches metadata from the first bootstrap address that answers.
    pub async fn connect(config: ClientConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let channels = Channels::new(Profile::CLIENT.connect_timeout(config.connect_timeout));
        let cluster = Arc::new(Self {
            config,
            channels,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            refresh: tokio::sync::Mutex::new(None),
            last_good: Mutex::new(None),
        });
        cluster.refresh(0).await?;
        Ok(cluster)
    }

    /// The cached metadata.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read_locked())
    }

    /// A (lazily connecting) channel to `addr`, one per address.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        self.channels
            .get(addr)
            .map_err(|e| Error::InvalidConfig(format!("bad broker address: {e}")))
    }

    /// A broker client for `addr`.
    pub fn client(&self, addr: &str) -> Result<BrokerClient<Channel>> {
        Ok(BrokerClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Addresses to try for a request any broker can answer: the last that answered, the
    /// known brokers, then the bootstrap list.
    fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(a) = self.last_good.locked().clone() {
            out.push(a);
        }
        let snap = self.snapshot();
        let mut known: Vec<(&u64, &String)> = snap.brokers.iter().collect();
        known.sort();
        for addr in known
            .into_iter()
            .map(|(_, a)| a)
            .chain(self.config.bootstrap.iter())
        {
            if !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    /// Runs `call` against brokers in turn until one answers without a transport error (or
    /// a timeout). Errors the server sent in its answer are the call's business.
    pub async fn call_any<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut failures = Vec::new();
        for addr in self.candidates() {
            let client = self.client(&addr)?;
            match tokio::time::timeout(self.config.request_timeout, call(client)).await {
                Ok(Ok(answer)) => {
                    *self.last_good.locked() = Some(addr);
                    return Ok(answer);
                }
                Ok(Err(status)) => {
                    let err = Error::from(status);
                    if !matches!(err, Error::Unavailable(_) | Error::Timeout(_)) {
                        return Err(err);
                    }
                    tracing::debug!(%addr, error = %err, "{what}: broker unreachable");
                    failures.push(format!("{addr}: {err}"));
                }
                Err(_) => {
                    failures.push(format!(
                        "{addr}: no answer within {:?}",
                        self.config.request_timeout
                    ));
                }
            }
            let mut last = self.last_good.locked();
            if last.as_deref() == Some(addr.as_str()) {
                *last = None;
            }
        }
        Err(Error::Unavailable(format!(
            "{what}: no broker reachable ({})",
            failures.join("; ")
        )))
    }

    /// Fetches metadata anew unless a refresh newer than `seen` (a snapshot generation)
    /// happened meanwhile; refreshes at most every [`MIN_REFRESH_INTERVAL`].
    pub async fn refresh(&self, seen: u64) -> Result<Arc<Snapshot>> {
        let mut last = self.refresh.lock().await;
        let current = self.snapshot();
        if current.generation > seen {
            return Ok(current);
        }
        if let Some(at) = *last {
            let next = at + MIN_REFRESH_INTERVAL;
            tokio::time::sleep_until(next.into()).await;
        }
        let result = self
            .call_any("Metadata", |mut c| async move {
                c.metadata(pb::MetadataRequest { topics: vec![] }).await
            })
            .await;
        *last = Some(Instant::now());
        let answer = result?.into_inner();
        let mut snap = Snapshot {
            generation: current.generation + 1,
            ..Snapshot::default()
        };
        for b in answer.brokers {
            snap.brokers.insert(b.id, b.address);
        }
        for t in answer.topics {
            if check(t.error).is_err() {
                continue;
            }
            let mut partitions = t.partitions;
            partitions.sort_by_key(|p| p.partition);
            let partitions = partitions.into_iter().map(Into::into).collect();
            snap.topics.insert(
                t.name,
                TopicInfo {
                    id: t.id,
                    partitions,
                },
            );
        }
        let snap = Arc::new(snap);
        *self.snapshot.write_locked() = Arc::clone(&snap);
        Ok(snap)
    }

    /// The snapshot once it knows `topic`, refreshing for up to `wait`; else
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub async fn topic(&self, topic: &str, wait: Duration) -> Result<Arc<Snapshot>> {
        let deadline = Instant::now() + wait;
        let mut snap = self.snapshot();
        loop {
            if snap.topics.contains_key(topic) {
                return Ok(snap);
            }
            if Instant::now() >= deadline {
                return Err(Error::server(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("unknown topic `{topic}`"),
                ));
            }
            snap = self.refresh(snap.generation).await?;
        }
    }

    /// The leader's address of a partition, refreshing metadata for up to `wait` when there
    /// is none; an out-of-range partition is [`Error::InvalidInput`].
    pub async fn leader(&self, topic: &str, partition: u32, wait: Duration) -> Result<String> {
        let deadline = Instant::now() + wait;
        let mut snap = self.topic(topic, wait).await?;
        loop {
            let count = snap.partition_count(topic).unwrap_or(0);
            if partition as usize >= count {
                return Err(Error::InvalidInput(format!(
                    "partition {partition} of topic `{topic}` does not exist ({count} partitions)"
                )));
            }
            if let Some((_, addr)) = snap.leader(topic, partition) {
                return Ok(addr.to_owned());
            }
            if Instant::now() >= deadline {
                return Err(Error::server(
                    ErrorCode::NotLeaderOrFollower,
                    format!("{topic}-{partition} has no leader"),
                ));
            }
            snap = self.refresh(snap.generation).await?;
        }
    }
}
