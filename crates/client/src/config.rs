//! Configuration of the clients: where the cluster is, and how producers and consumers behave.

use std::str::FromStr;
use std::time::Duration;

use weir_storage::Compression;

use crate::error::{Error, Result};

/// Where the cluster is and how long to wait for it; shared by [`crate::Admin`],
/// [`crate::Producer`] and [`crate::Consumer`].
///
/// ```
/// use std::time::Duration;
/// use weir_client::ClientConfig;
///
/// let bootstrap = ClientConfig::parse_bootstrap("10.0.0.1:9700, 10.0.0.2:9700").unwrap();
/// let mut config = ClientConfig::new(bootstrap);
/// config.request_timeout = Duration::from_secs(10);
/// assert_eq!(config.bootstrap, ["10.0.0.1:9700", "10.0.0.2:9700"]);
/// assert_eq!(config.connect_timeout, Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Broker addresses (`host:port`) to discover the cluster from, tried in order.
    pub bootstrap: Vec<String>,
    /// Longest wait for one request's answer (default 30 s).
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection (default 3 s).
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A configuration with default timeouts.
    pub fn new(bootstrap: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// Parses a comma-separated list of `host:port` addresses (`"h1:9700,h2:9700"`).
    pub fn parse_bootstrap(s: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let part = part
                .strip_prefix("http://")
                .unwrap_or(part)
                .trim_end_matches('/');
            let valid = part.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !valid {
                return Err(Error::InvalidConfig(format!(
                    "bootstrap address `{part}` is not host:port"
                )));
            }
            out.push(part.to_owned());
        }
        if out.is_empty() {
            return Err(Error::InvalidConfig(
                "no bootstrap address given".to_owned(),
            ));
        }
        Ok(out)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::InvalidConfig(
                "no bootstrap address given".to_owned(),
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig("timeouts must be positive".to_owned()));
        }
        Ok(())
    }
}

/// How many replicas must have a batch before the producer hears it is delivered.
///
/// ```
/// use weir_client::Acks;
///
/// assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
/// assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
/// assert_eq!("1".parse::<Acks>().unwrap(), Acks::Leader);
/// assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
/// assert_eq!(Acks::All.as_i32(), -1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// acks=0: no answer awaited beyond receipt; offsets are reported as -1.
    None,
    /// acks=1: after the leader's append.
    Leader,
    /// acks=all (-1): after every in-sync replica has it.
    #[default]
    All,
}

impl Acks {
    /// The wire value: 0, 1 or -1.
    pub fn as_i32(self) -> i32 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" | "none" => Ok(Acks::None),
            "1" | "leader" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(Error::InvalidConfig(format!(
                "acks must be 0, 1, all or -1, not `{other}`"
            ))),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// How a [`crate::Producer`] batches, bounds memory and retries.
///
/// ```
/// use std::time::Duration;
/// use weir_client::{Acks, Compression, ProducerConfig};
///
/// let config = ProducerConfig {
///     acks: Acks::Leader,
///     linger: Duration::from_millis(20),
///     compression: Compression::Lz4,
///     ..ProducerConfig::default()
/// };
/// assert_eq!(config.batch_size, 16 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Replicas that must have a batch before it counts as delivered (default all).
    pub acks: Acks,
    /// A partition's batch is sent once it holds this many bytes (default 16 KiB).
    pub batch_size: usize,
    /// ... or once its first record waited this long (default 5 ms).
    pub linger: Duration,
    /// Bytes of records buffered and in flight; `send` waits for space (default 32 MiB).
    pub buffer_memory: usize,
    /// Batches of one partition sent and not yet answered (default 5).
    pub max_in_flight_per_partition: usize,
    /// How long a record may take from `send` to delivery, retries included (default 120 s).
    pub delivery_timeout: Duration,
    /// Wait before retrying a partition after a retriable error (default 100 ms).
    pub retry_backoff: Duration,
    /// Codec of the batches (default none).
    pub compression: Compression,
    /// The codec's level (Kafka's `compression.gzip.level`, `compression.zstd.level`):
    /// gzip 1–9, zstd -131072–22; `None` (default) is the codec's own default (gzip 6,
    /// zstd 3). Snappy and lz4 take none.
    pub compression_level: Option<i32>,
    /// Longest wait for one produce answer; also the broker's acks=all timeout (default 30 s).
    pub request_timeout: Duration,
    /// The idempotent producer (Kafka's `enable.idempotence`): each batch carries a producer
    /// id and per-partition sequence numbers, so a retried batch is written once and batches
    /// stay in order across retries, with up to five in flight per partition. `None`
    /// (default): on whenever `acks` is all and `max_in_flight_per_partition` at most 5, as in
    /// Kafka 3.x when the settings do not conflict; `Some(true)` insists (and refuses other
    /// settings); `Some(false)` turns it off.
    pub idempotence: Option<bool>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            batch_size: 16 * 1024,
            linger: Duration::from_millis(5),
            buffer_memory: 32 * 1024 * 1024,
            max_in_flight_per_partition: 5,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            compression: Compression::None,
            compression_level: None,
            request_timeout: Duration::from_secs(30),
            idempotence: None,
        }
    }
}

/// Most batches in flight per partition an idempotent producer may have: the broker
/// remembers a producer's last five batches per partition.
pub const MAX_IDEMPOTENT_IN_FLIGHT: usize = 5;

impl ProducerConfig {
    /// Whether the producer is idempotent with these settings (see [`Self::idempotence`]).
    pub fn idempotent(&self) -> bool {
        self.idempotence.unwrap_or(
            self.acks == Acks::All && self.max_in_flight_per_partition <= MAX_IDEMPOTENT_IN_FLIGHT,
        )
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig("batch_size must be positive".into()));
        }
        if self.buffer_memory == 0 || self.buffer_memory > u32::MAX as usize / 2 {
            return Err(Error::InvalidConfig(
                "buffer_memory must be between 1 byte and 2 GiB".into(),
            ));
        }
        if self.max_in_flight_per_partition == 0 {
            return Err(Error::InvalidConfig(
                "max_in_flight_per_partition must be positive".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.delivery_timeout.is_zero() {
            return Err(Error::InvalidConfig("timeouts must be positive".into()));
        }
        if let Some(level) = self.compression_level {
            weir_storage::compression::check_level(self.compression, level)
                .map_err(|e| Error::InvalidConfig(format!("compression_level: {e}")))?;
        }
        if self.idempotence == Some(true) && self.acks != Acks::All {
            return Err(Error::InvalidConfig(
                "an idempotent producer needs acks = all (or set idempotence to Some(false))"
                    .into(),
            ));
        }
        if self.idempotence == Some(true)
            && self.max_in_flight_per_partition > MAX_IDEMPOTENT_IN_FLIGHT
        {
            return Err(Error::InvalidConfig(format!(
                "an idempotent producer keeps at most {MAX_IDEMPOTENT_IN_FLIGHT} batches in \
                 flight per partition"
            )));
        }
        Ok(())
    }
}

/// How a [`crate::Consumer`] fetches.
///
/// ```
/// use std::time::Duration;
/// use weir_client::ConsumerConfig;
///
/// let config = ConsumerConfig { max_wait: Duration::from_millis(100), ..Default::default() };
/// assert_eq!(config.max_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Most bytes per fetch answer, per partition (default 1 MiB; at least one batch).
    pub max_bytes: u32,
    /// Longest wait for `min_bytes` before the broker answers (default 500 ms).
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering (default 1).
    pub min_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_parsing() {
        assert_eq!(
            ClientConfig::parse_bootstrap("a:1,b:2").unwrap(),
            ["a:1", "b:2"]
        );
        assert_eq!(
            ClientConfig::parse_bootstrap(" 127.0.0.1:9700 , ,[::1]:9701").unwrap(),
            ["127.0.0.1:9700", "[::1]:9701"]
        );
        assert_eq!(
            ClientConfig::parse_bootstrap("http://h:9/").unwrap(),
            ["h:9"]
        );
        for bad in ["", " , ", "host", "host:", ":9700", "h:0", "h:70000", "h:x"] {
            let err = ClientConfig::parse_bootstrap(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{bad}: {err}");
        }
        let c = ClientConfig::new(["a:1"]);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert!(c.validate().is_ok());
        assert!(ClientConfig::new(Vec::<String>::new()).validate().is_err());
    }

    #[test]
    fn acks_parsing() {
        assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
        assert_eq!("1".parse::<Acks>().unwrap(), Acks::Leader);
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("ALL".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert!(matches!("2".parse::<Acks>(), Err(Error::InvalidConfig(_))));
        assert_eq!(
            [Acks::None, Acks::Leader, Acks::All].map(Acks::as_i32),
            [0, 1, -1]
        );
        for a in [Acks::None, Acks::Leader, Acks::All] {
            assert_eq!(a.to_string().parse::<Acks>().unwrap(), a);
        }
    }

    #[test]
    fn producer_defaults() {
        let c = ProducerConfig::default();
        assert_eq!(c.acks, Acks::All);
        assert_eq!(c.batch_size, 16384);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.buffer_memory, 32 << 20);
        assert_eq!(c.max_in_flight_per_partition, 5);
        assert_eq!(c.delivery_timeout, Duration::from_secs(120));
        assert!(c.validate().is_ok());
        let bad = ProducerConfig {
            batch_size: 0,
            ..ProducerConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
