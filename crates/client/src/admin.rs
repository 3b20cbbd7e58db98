//! The admin client: topics and the cluster, through any broker (which forwards to the
//! controller quorum), plus each partition's offsets from its leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use weir_proto::broker::v1 as pb;
use weir_proto::common::v1::{Error as WireError, ErrorCode};
use weir_proto::controller::v1 as cpb;

use crate::config::ClientConfig;
use crate::error::{check, Error, Result};
use crate::metadata::Cluster;

/// A topic as the controller describes it, with each partition's offsets from its leader.
///
/// ```
/// use weir_client::{ConfigEntry, ConfigSource, PartitionDescription, TopicDescription};
///
/// let topic = TopicDescription {
///     name: "events".into(),
///     id: "7f3c…".into(),
///     configs: [("retention.ms".to_string(), "86400000".to_string())].into(),
///     config_entries: vec![ConfigEntry {
///         name: "retention.ms".into(),
///         value: "86400000".into(),
///         source: ConfigSource::Topic,
///     }],
///     partitions: vec![PartitionDescription {
///         partition: 0,
///         leader: Some(1),
///         leader_epoch: 3,
///         replicas: vec![1, 2, 3],
///         isr: vec![1, 2, 3],
///         log_start_offset: 0,
///         high_watermark: 42,
///         log_end_offset: 42,
///     }],
/// };
/// assert_eq!(topic.partitions[0].high_watermark, 42);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Topic id.
    pub id: String,
    /// Configuration overrides.
    pub configs: BTreeMap<String, String>,
    /// Every config key with the value in effect and where it comes from (the topic's
    /// override, the server's default, or the built-in default), as Kafka's DescribeConfigs.
    pub config_entries: Vec<ConfigEntry>,
    /// Partitions by index.
    pub partitions: Vec<PartitionDescription>,
}

/// One config key of a topic with its effective value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigEntry {
    /// The key, as Kafka spells it.
    pub name: String,
    /// The value in effect.
    pub value: String,
    /// Where it comes from.
    pub source: ConfigSource,
}

/// Where a topic config value comes from; shown (and serialized) as `topic`,
/// `server-default`, `built-in` or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// The topic's own override.
    Topic,
    /// The server's default for every topic (`--topic-config-default`).
    ServerDefault,
    /// Weir's built-in default.
    BuiltIn,
    /// Not said (a server that predates sources).
    Unknown,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigSource::Topic => "topic",
            ConfigSource::ServerDefault => "server-default",
            ConfigSource::BuiltIn => "built-in",
            ConfigSource::Unknown => "unknown",
        })
    }
}

/// One partition of a [`TopicDescription`].
///
/// ```
/// use weir_client::PartitionDescription;
///
/// let p = PartitionDescription {
///     partition: 1,
///     leader: None, // offline
///     leader_epoch: 5,
///     replicas: vec![2, 3],
///     isr: vec![],
///     log_start_offset: -1, // -1: the leader could not be asked
///     high_watermark: -1,
///     log_end_offset: -1,
/// };
/// assert!(p.leader.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    /// Partition index.
    pub partition: u32,
    /// Leader's broker id; `None` when offline.
    pub leader: Option<u64>,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replicas, preferred leader first.
    pub replicas: Vec<u64>,
    /// In-sync replicas.
    pub isr: Vec<u64>,
    /// Log start offset (-1 when unavailable).
    pub log_start_offset: i64,
    /// High watermark (-1 when unavailable).
    pub high_watermark: i64,
    /// Log end offset (-1 when unavailable).
    pub log_end_offset: i64,
}

/// The cluster: brokers, the controller quorum and the metadata version.
///
/// ```
/// use weir_client::{BrokerDescription, BrokerState, ClusterDescription, QuorumMember};
///
/// let cluster = ClusterDescription {
///     controller_leader: Some(1),
///     brokers: vec![BrokerDescription {
///         id: 1,
///         address: "10.0.0.1:9700".into(),
///         rack: None,
///         state: BrokerState::Active,
///     }],
///     voters: vec![QuorumMember { id: 1, address: "10.0.0.1:9800".into(), match_index: 17, lag: 0 }],
///     learners: vec![],
///     metadata_version: 17,
///     term: 2,
/// };
/// assert_eq!(cluster.brokers[0].state, BrokerState::Active);
/// assert_eq!(cluster.brokers[0].state.to_string(), "active");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterDescription {
    /// Node id of the controller leader, when there is one.
    pub controller_leader: Option<u64>,
    /// Registered brokers.
    pub brokers: Vec<BrokerDescription>,
    /// Voting controllers.
    pub voters: Vec<QuorumMember>,
    /// Non-voting members of the metadata quorum.
    pub learners: Vec<QuorumMember>,
    /// Metadata version (the log index applied).
    pub metadata_version: u64,
    /// Raft term.
    pub term: u64,
}

/// One broker of a [`ClusterDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerDescription {
    /// Broker id.
    pub id: u64,
    /// Broker listener address.
    pub address: String,
    /// Rack, if any.
    pub rack: Option<String>,
    /// Whether it is active or fenced.
    pub state: BrokerState,
}

/// A registered broker's state, as the controller quorum decided it. Shown (and serialized)
/// as `active`, `fenced` or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerState {
    /// Heartbeating and caught up: it may lead partitions and be in ISRs.
    Active,
    /// Missed its session, shut down, or not yet caught up: it leads nothing.
    Fenced,
    /// A state this client does not know (an answer from a newer or older cluster).
    Unknown,
}

impl std::fmt::Display for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BrokerState::Active => "active",
            BrokerState::Fenced => "fenced",
            BrokerState::Unknown => "unknown",
        })
    }
}

/// One member of the metadata quorum in a [`ClusterDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumMember {
    /// Node id.
    pub id: u64,
    /// Controller listener address.
    pub address: String,
    /// Last log index known replicated to it.
    pub match_index: u64,
    /// Entries behind the leader.
    pub lag: u64,
}

/// Administers topics and inspects the cluster. Cheap to clone.
///
/// ```no_run
/// # async fn example() -> weir_client::Result<()> {
/// use std::collections::BTreeMap;
/// use weir_client::{Admin, ClientConfig};
///
/// let admin = Admin::connect(ClientConfig::new(["127.0.0.1:9700", "127.0.0.1:9701"])).await?;
/// let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
/// let topic = admin.create_topic("events", 3, 3, configs).await?;
/// assert_eq!(topic.partitions.len(), 3);
/// println!("{:?}", admin.list_topics().await?);
/// println!("{:?}", admin.describe_topic("events").await?);
/// admin
///     .alter_topic_config("events", BTreeMap::from([("retention.ms".into(), "3600000".into())]), vec![])
///     .await?;
/// let cluster = admin.describe_cluster().await?;
/// println!("controller leader: {:?}", cluster.controller_leader);
/// admin.delete_topic("events").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("bootstrap", &self.cluster.config.bootstrap)
            .finish()
    }
}

/// Errors worth retrying an admin request on: the controller quorum is between leaders.
fn admin_retriable(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::NotController | ErrorCode::RequestTimedOut)
    )
}

impl Admin {
    /// Connects: the first bootstrap address that answers a Metadata request wins (dead
    /// ones are skipped).
    pub async fn connect(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            cluster: Cluster::connect(config).await?,
        })
    }

    /// Sends an admin request to any broker, retrying while the controller is between
    /// leaders (up to the request timeout). `error` extracts the answer's error.
    async fn request<T, F, Fut>(
        &self,
        what: &str,
        call: F,
        error: fn(&T) -> Option<WireError>,
    ) -> Result<T>
    where
        F: Fn(pb::broker_client::BrokerClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.cluster.config.request_timeout;
        loop {
            let answer = self.cluster.call_any(what, &call).await?.into_inner();
            match check(error(&answer)) {
                Ok(()) => return Ok(answer),
                Err(e) if admin_retriable(&e) && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "{what}: retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription> {
        let req = cpb::CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication_factor,
            configs: configs.into_iter().collect(),
        };
        let answer = self
            .request(
                "CreateTopic",
                |mut c| {
                    let req = req.clone();
                    async move { c.create_topic(req).await }
                },
                |a| a.error.clone(),
            )
            .await?;
        let topic = answer.topic.ok_or_else(|| {
            Error::server(
                ErrorCode::UnknownServerError,
                "CreateTopic answered no topic",
            )
        })?;
        Ok(topic.into())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = cpb::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.request(
            "DeleteTopic",
            |mut c| {
                let req = req.clone();
                async move { c.delete_topic(req).await }
            },
            |a| a.error.clone(),
        )
        .await?;
        Ok(())
    }

    /// Removes the registration of broker `id`, which must be fenced (gone): it leaves the
    /// broker list of every Metadata answer. INVALID_REQUEST for an unknown or active broker.
    pub async fn unregister_broker(&self, id: u64) -> Result<()> {
        let req = cpb::UnregisterBrokerRequest { broker_id: id };
        self.request(
            "UnregisterBroker",
            |mut c| async move { c.unregister_broker(req).await },
            |a| a.error.clone(),
        )
        .await?;
        Ok(())
    }

    /// The names of all topics, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let answer = self.describe_topics(vec![]).await?;
        let names: BTreeSet<String> = answer.topics.into_iter().map(|t| t.name).collect();
        Ok(names.into_iter().collect())
    }

    async fn describe_topics(&self, names: Vec<String>) -> Result<cpb::DescribeTopicsResponse> {
        let req = cpb::DescribeTopicsRequest { names };
        self.request(
            "DescribeTopics",
            |mut c| {
                let req = req.clone();
                async move { c.describe_topics(req).await }
            },
            |a| a.error.clone(),
        )
        .await
    }

    /// A topic's partitions, leaders, replicas, ISR and configuration, with each partition's
    /// log start offset, high watermark and log end offset as its leader reports them (-1
    /// when the leader cannot be asked).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let answer = self.describe_topics(vec![name.to_owned()]).await?;
        let topic = answer
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                Error::server(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("unknown topic `{name}`"),
                )
            })?;
        let mut description: TopicDescription = topic.into();
        self.fill_offsets(&mut description).await;
        Ok(description)
    }

    /// Asks each partition leader for its offsets (best effort).
    async fn fill_offsets(&self, topic: &mut TopicDescription) {
        let leaders: BTreeSet<u64> = topic.partitions.iter().filter_map(|p| p.leader).collect();
        let mut snap = self.cluster.snapshot();
        if leaders.iter().any(|id| !snap.brokers.contains_key(id)) {
            if let Ok(s) = self.cluster.refresh(snap.generation).await {
                snap = s;
            }
        }
        let timeout = self
            .cluster
            .config
            .request_timeout
            .min(Duration::from_secs(5));
        let asks = leaders.into_iter().filter_map(|id| {
            let addr = snap.brokers.get(&id)?.clone();
            let mut client = self.cluster.client(&addr).ok()?;
            let req = pb::PartitionOffsetsRequest {
                topic: topic.name.clone(),
            };
            Some(async move {
                let answer = tokio::time::timeout(timeout, client.partition_offsets(req)).await;
                (id, answer)
            })
        });
        for (leader, answer) in futures::future::join_all(asks).await {
            let Ok(Ok(answer)) = answer else { continue };
            let answer = answer.into_inner();
            if check(answer.error).is_err() {
                continue;
            }
            for o in answer.partitions {
                if check(o.error).is_err() {
                    continue;
                }
                if let Some(p) = topic
                    .partitions
                    .iter_mut()
                    .find(|p| p.partition == o.partition && p.leader == Some(leader))
                {
                    p.log_start_offset = o.log_start_offset;
                    p.high_watermark = o.high_watermark;
                    p.log_end_offset = o.log_end_offset;
                }
            }
        }
    }

    /// Sets and deletes topic configuration overrides.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<()> {
        let req = cpb::AlterTopicConfigRequest {
            name: name.to_owned(),
            set: set.into_iter().collect(),
            delete,
        };
        self.request(
            "AlterTopicConfig",
            |mut c| {
                let req = req.clone();
                async move { c.alter_topic_config(req).await }
            },
            |a| a.error.clone(),
        )
        .await?;
        Ok(())
    }

    /// Brokers, the controller quorum and its leader.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let r = self
            .request(
                "DescribeCluster",
                |mut c| async move { c.describe_cluster(cpb::DescribeClusterRequest {}).await },
                |a| a.error.clone(),
            )
            .await?;
        Ok(ClusterDescription {
            controller_leader: (r.controller_leader != 0).then_some(r.controller_leader),
            brokers: r.brokers.into_iter().map(Into::into).collect(),
            voters: r.voters.into_iter().map(Into::into).collect(),
            learners: r.learners.into_iter().map(Into::into).collect(),
            metadata_version: r.metadata_version,
            term: r.term,
        })
    }
}
