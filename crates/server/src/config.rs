//! `weir-server` configuration: every flag also reads from a `WEIR_*` environment variable, so a
//! container needs no config file. Defaults make a working single-node cluster (node 1, both
//! roles, everything on this host).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A flag or variable with a bad value; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(ConfigError(format!($($arg)*)))
    };
}

/// Runs one Weir node: a broker, a controller (Raft voter of the metadata quorum), or both.
#[derive(Debug, Parser)]
#[command(name = "weir-server", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Args {
    /// This node's id: its broker id and its controller id.
    #[arg(long, env = "WEIR_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// Roles of this node: `broker`, `controller`, or `broker,controller` (combined).
    #[arg(long, env = "WEIR_ROLES", default_value = "broker,controller")]
    pub roles: String,
    /// Broker listener (clients and replication).
    #[arg(long, env = "WEIR_LISTEN", default_value = "0.0.0.0:9700")]
    pub listen: SocketAddr,
    /// Controller listener (Raft and controller RPCs).
    #[arg(long, env = "WEIR_CONTROLLER_LISTEN", default_value = "0.0.0.0:9701")]
    pub controller_listen: SocketAddr,
    /// HTTP listener for /health (and /metrics).
    #[arg(long, env = "WEIR_HTTP_LISTEN", default_value = "0.0.0.0:9709")]
    pub http_listen: SocketAddr,
    /// host:port clients are told to use for this broker. Default: the broker listener, with
    /// 0.0.0.0 replaced by 127.0.0.1.
    #[arg(long, env = "WEIR_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// host:port other nodes dial for this node's controller listener. Default: this node's
    /// entry in the controller quorum, or the controller listener with 0.0.0.0 replaced by
    /// 127.0.0.1.
    #[arg(long, env = "WEIR_ADVERTISED_CONTROLLER_LISTENER")]
    pub advertised_controller_listener: Option<String>,
    /// The controller voters, `id@host:port,…` (Kafka's controller.quorum.voters).
    #[arg(
        long,
        env = "WEIR_CONTROLLER_QUORUM",
        default_value = "1@127.0.0.1:9701"
    )]
    pub controller_quorum: String,
    /// Data directory (partition logs, metadata store).
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "./weir-data")]
    pub data_dir: PathBuf,
    /// Rack of this broker, for rack-aware replica placement.
    #[arg(long, env = "WEIR_RACK")]
    pub rack: Option<String>,
    /// Broker heartbeat period to the controller, in ms.
    #[arg(long, env = "WEIR_BROKER_HEARTBEAT_MS", default_value_t = 500)]
    pub broker_heartbeat_ms: u64,
    /// A broker silent this long (ms) is fenced by the controller.
    #[arg(long, env = "WEIR_BROKER_SESSION_TIMEOUT_MS", default_value_t = 3000)]
    pub broker_session_timeout_ms: u64,
    /// A follower that has not caught up with its leader for this long (ms) leaves the ISR
    /// (Kafka's replica.lag.time.max.ms).
    #[arg(long, env = "WEIR_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// Snapshot the metadata log every this many entries (and purge what it covers).
    #[arg(long, env = "WEIR_METADATA_SNAPSHOT_ENTRIES", default_value_t = 5000)]
    pub metadata_snapshot_entries: u64,
    /// Largest window of disk blocks reserved ahead of each busy partition's active segment
    /// (bytes; 0 turns it off), so appends don't stall on block allocation while the kernel
    /// writes back. The window grows with the segment, so idle partitions reserve nothing.
    #[arg(long, env = "WEIR_LOG_PREALLOCATE_BYTES", default_value_t = 256 << 20)]
    pub log_preallocate_bytes: u64,
    /// Local IP address this node's own connections (to controllers and partition leaders)
    /// come from. Default: the operating system chooses. For hosts with several interfaces,
    /// and for tests that tell nodes apart by the address their connections arrive from.
    #[arg(long, env = "WEIR_SOURCE_ADDRESS")]
    pub source_address: Option<std::net::IpAddr>,
    /// How long (ms) a removed partition replica's log is kept, renamed `<dir>.deleted-<ms>`,
    /// before it is deleted (Kafka's file.delete.delay.ms): a topic that comes back with the
    /// same id in that time gets its log back.
    #[arg(long, env = "WEIR_FILE_DELETE_DELAY_MS", default_value_t = 60_000)]
    pub file_delete_delay_ms: u64,
    /// How long (ms) a partition remembers an idempotent producer it has not heard from
    /// (Kafka's producer.id.expiration.ms). A producer idle for longer that resumes its
    /// sequence gets UNKNOWN_PRODUCER_ID and starts again with a new id.
    #[arg(
        long,
        env = "WEIR_PRODUCER_ID_EXPIRATION_MS",
        default_value_t = 86_400_000
    )]
    pub producer_id_expiration_ms: u64,
    /// Most idempotent producer ids a partition remembers (the least recently seen is
    /// forgotten first), bounding the memory their state takes.
    #[arg(long, env = "WEIR_MAX_PRODUCERS_PER_PARTITION", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_producers_per_partition: u64,
    /// Most segments a partition keeps before it stops rolling by segment.bytes and
    /// segment.ms (its active segment then grows, with a warning, until retention deletes old
    /// ones): each segment holds a file descriptor.
    #[arg(long, env = "WEIR_MAX_SEGMENTS_PER_PARTITION", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub max_segments_per_partition: u64,
    /// Most segments open across all of this node's partitions before none of them rolls by
    /// segment.bytes or segment.ms (active segments then grow, with a warning, until retention
    /// deletes old ones): together they must not run the node out of descriptors, which
    /// connections need too. 0 (default): half the open-file limit at start (after it is raised
    /// to the hard limit).
    #[arg(long, env = "WEIR_MAX_SEGMENTS_PER_NODE", default_value_t = 0)]
    pub max_segments_per_node: u64,
    /// Close a client connection on which no request or answer moved for this long (ms;
    /// Kafka's connections.max.idle.ms): keep-alive pings alone do not keep it open. Clients
    /// reconnect on their next request. Keep it well above the longest a request may wait
    /// without an answer moving (a fetch's max_wait, up to 30 s; an acks=all timeout).
    #[arg(long, env = "WEIR_CONNECTIONS_MAX_IDLE_MS", default_value_t = 600_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connections_max_idle_ms: u64,
    /// A default for every topic that does not set KEY itself, instead of the built-in one
    /// (Kafka's broker-level log configs): e.g. `--topic-config-default retention.ms=86400000
    /// --topic-config-default min.insync.replicas=2`. Repeatable; comma-separated in the
    /// environment. Start every node with the same defaults. `weir topic describe` shows
    /// where each value comes from. As in Kafka, a default min.insync.replicas is not checked
    /// against each topic's replication factor: a topic with fewer replicas refuses acks=all.
    #[arg(
        long = "topic-config-default",
        env = "WEIR_TOPIC_CONFIG_DEFAULTS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub topic_config_defaults: Vec<String>,
}

const EXAMPLES: &str = "Examples:
  weir-server                         # single-node cluster with defaults
  weir-server --node-id 2 --controller-quorum 1@a:9701,2@b:9701,3@c:9701 \\
              --advertised-listener b:9700 --data-dir /data
  WEIR_NODE_ID=4 WEIR_ROLES=broker weir-server   # broker-only node (a Raft learner)";

/// The roles a node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves clients and stores partitions.
    pub broker: bool,
    /// Votes in the metadata quorum.
    pub controller: bool,
}

/// Validated configuration: what [`Args::validate`] made of the flags, every value checked and
/// every default filled in, so nothing after start-up parses or second-guesses it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id (`--node-id`): its broker id and its controller id, unique in the
    /// cluster and never reused by another machine (a voter's id is in the quorum).
    pub node_id: u64,
    /// Which roles this process runs (`--roles`): broker, controller or both.
    pub roles: Roles,
    /// Where the broker listener binds (clients and replication). Port 0 binds a free port,
    /// named in the data directory's listeners file.
    pub listen: SocketAddr,
    /// Where the controller listener binds (Raft and controller RPCs).
    pub controller_listen: SocketAddr,
    /// Where the HTTP listener binds (`/health`). Port 0 as for [`ServerConfig::listen`].
    pub http_listen: SocketAddr,
    /// host:port clients and other brokers are told to dial for this broker: the registered
    /// address in every Metadata answer. Default: the broker listener, 0.0.0.0 read as
    /// 127.0.0.1 (and a port-0 listener's bound port).
    pub advertised: String,
    /// host:port other controllers dial for this node's controller listener: its quorum entry
    /// when it is a voter.
    pub advertised_controller: String,
    /// The quorum's voters, `(id, controller host:port)`, from `--controller-quorum`: the same
    /// list on every node.
    pub quorum: Vec<(u64, String)>,
    /// Where this node keeps its metadata store, partition logs and listeners file.
    pub data_dir: PathBuf,
    /// The broker's rack, for rack-aware replica placement; `None` when not given.
    pub rack: Option<String>,
    /// How often the broker heartbeats to the controller (`--broker-heartbeat-ms`).
    pub heartbeat: Duration,
    /// A broker silent this long is fenced (`--broker-session-timeout-ms`; more than the
    /// heartbeat period).
    pub session_timeout: Duration,
    /// The metadata log is snapshotted every this many entries.
    pub snapshot_entries: u64,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the
    /// ISR.
    pub replica_lag_time_max: Duration,
    /// Disk blocks reserved ahead of each active segment (bytes; 0: off).
    pub log_preallocate_bytes: u64,
    /// `producer.id.expiration.ms`.
    pub producer_id_expiration: Duration,
    /// Idempotent producer ids remembered per partition.
    pub max_producers_per_partition: usize,
    /// Segments a partition keeps before it stops rolling by size and age.
    pub max_segments_per_partition: usize,
    /// Segments open across the node's partitions before none rolls by size and age.
    pub max_segments_per_node: usize,
    /// Idle time after which a broker-listener connection is closed.
    pub connections_max_idle: Duration,
    /// Defaults for every topic's configs (`--topic-config-default`), validated.
    pub topic_defaults: std::collections::BTreeMap<String, String>,
    /// Local address of the node's own outgoing connections (`--source-address`); `None`: the
    /// kernel's choice.
    pub source_address: Option<std::net::IpAddr>,
    /// `file.delete.delay.ms`: how long a removed replica's log is kept before it is deleted.
    pub file_delete_delay: Duration,
}

fn loopback_if_unspecified(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Parses `1@host:port,2@host:port`.
pub fn parse_quorum(text: &str) -> Result<Vec<(u64, String)>, ConfigError> {
    let mut voters = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('@').ok_or_else(|| {
            ConfigError(format!(
                "controller quorum entry `{part}` is not id@host:port"
            ))
        })?;
        let id: u64 = id
            .parse()
            .map_err(|_| ConfigError(format!("controller quorum entry `{part}`: bad id")))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
            ConfigError(format!(
                "controller quorum entry `{part}`: address lacks a port"
            ))
        })?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            bail!("controller quorum entry `{part}`: bad address");
        }
        if voters.iter().any(|(v, _)| *v == id) {
            bail!("controller quorum lists node {id} twice");
        }
        voters.push((id, addr.to_owned()));
    }
    if voters.is_empty() {
        bail!("the controller quorum is empty");
    }
    Ok(voters)
}

impl Args {
    /// Validates the flags, naming the bad value.
    pub fn validate(self) -> Result<ServerConfig, ConfigError> {
        let mut roles = Roles {
            broker: false,
            controller: false,
        };
        for role in self
            .roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            match role {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => bail!("unknown role `{other}` in --roles (expected broker, controller)"),
            }
        }
        if !roles.broker && !roles.controller {
            bail!("--roles must name at least one of broker, controller");
        }
        let quorum = parse_quorum(&self.controller_quorum)?;
        let in_quorum = quorum.iter().find(|(id, _)| *id == self.node_id);
        if roles.controller && in_quorum.is_none() {
            bail!(
                "node {} has the controller role but is not in --controller-quorum {}",
                self.node_id,
                self.controller_quorum
            );
        }
        if !roles.controller && in_quorum.is_some() {
            bail!(
                "node {} is in --controller-quorum but lacks the controller role",
                self.node_id
            );
        }
        if self.broker_heartbeat_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_ms
        {
            bail!(
                "--broker-session-timeout-ms ({}) must exceed --broker-heartbeat-ms ({}), which must be > 0",
                self.broker_session_timeout_ms,
                self.broker_heartbeat_ms
            );
        }
        if self.metadata_snapshot_entries == 0 {
            bail!("--metadata-snapshot-entries must be > 0");
        }
        let topic_defaults = weir_common::topic_config::parse_defaults(&self.topic_config_defaults)
            .map_err(|e| ConfigError(format!("--topic-config-default: {e}")))?;
        let advertised_controller = self
            .advertised_controller_listener
            .or_else(|| in_quorum.map(|(_, a)| a.clone()))
            .unwrap_or_else(|| loopback_if_unspecified(self.controller_listen));
        Ok(ServerConfig {
            node_id: self.node_id,
            roles,
            listen: self.listen,
            controller_listen: self.controller_listen,
            http_listen: self.http_listen,
            advertised: self
                .advertised_listener
                .unwrap_or_else(|| loopback_if_unspecified(self.listen)),
            advertised_controller,
            quorum,
            data_dir: self.data_dir,
            rack: self.rack.filter(|r| !r.is_empty()),
            heartbeat: Duration::from_millis(self.broker_heartbeat_ms),
            session_timeout: Duration::from_millis(self.broker_session_timeout_ms),
            snapshot_entries: self.metadata_snapshot_entries,
            replica_lag_time_max: Duration::from_millis(self.replica_lag_time_max_ms.max(1)),
            log_preallocate_bytes: self.log_preallocate_bytes,
            producer_id_expiration: Duration::from_millis(self.producer_id_expiration_ms.max(1)),
            topic_defaults,
            connections_max_idle: Duration::from_millis(self.connections_max_idle_ms),
            max_segments_per_partition: usize::try_from(self.max_segments_per_partition)
                .unwrap_or(usize::MAX),
            max_segments_per_node: match self.max_segments_per_node {
                0 => default_max_segments_per_node(),
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            max_producers_per_partition: usize::try_from(self.max_producers_per_partition)
                .unwrap_or(usize::MAX),
            source_address: self.source_address,
            file_delete_delay: Duration::from_millis(self.file_delete_delay_ms),
        })
    }
}

/// Half this process's open-file limit (the soft one, which `weir-server` raises to the hard
/// one before it reads its settings), at least 1,000: the rest is for connections and the
/// metadata store. Unbounded if the limit cannot be read or is infinite.
fn default_max_segments_per_node() -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) if soft != rlimit::INFINITY => {
            usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1_000)
        }
        _ => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<ServerConfig, Box<dyn std::error::Error>> {
        let mut argv = vec!["weir-server"];
        argv.extend_from_slice(extra);
        Ok(Args::try_parse_from(argv)?.validate()?)
    }

    #[test]
    fn topic_config_defaults_are_checked_key_by_key() {
        let c = args(&[
            "--topic-config-default",
            "retention.ms=3600000",
            "--topic-config-default",
            "compression.type=zstd,min.insync.replicas=2",
        ])
        .unwrap();
        assert_eq!(c.topic_defaults.len(), 3);
        assert_eq!(c.topic_defaults["compression.type"], "zstd");
        let bad = args(&["--topic-config-default", "colour=blue"]).unwrap_err();
        assert!(bad.to_string().contains("`colour`"), "{bad}");
        let bad = args(&["--topic-config-default", "retention.ms=soon"]).unwrap_err();
        assert!(bad.to_string().contains("`retention.ms`"), "{bad}");
    }

    #[test]
    fn defaults_make_a_single_node_cluster() {
        let c = args(&[]).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(
            c.roles,
            Roles {
                broker: true,
                controller: true
            }
        );
        assert_eq!(c.quorum, vec![(1, "127.0.0.1:9701".to_owned())]);
        assert_eq!(c.advertised, "127.0.0.1:9700");
        assert_eq!(c.advertised_controller, "127.0.0.1:9701");
    }

    #[test]
    fn bad_values_are_named() {
        for (argv, needle) in [
            (vec!["--roles", "broker,chef"], "chef"),
            (vec!["--controller-quorum", "1@a:1,1@b:2"], "twice"),
            (vec!["--controller-quorum", "x@a:1"], "x@a:1"),
            (
                vec!["--controller-quorum", "2@a:1"],
                "not in --controller-quorum",
            ),
            (vec!["--roles", "broker"], "lacks the controller role"),
            (vec!["--broker-heartbeat-ms", "5000"], "must exceed"),
        ] {
            let err = args(&argv).unwrap_err().to_string();
            assert!(err.contains(needle), "{argv:?}: {err}");
        }
    }
}
