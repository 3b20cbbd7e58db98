//! How every Weir process opens gRPC channels to another node: one place for the timeouts,
//! flow-control windows, keep-alives and `TCP_NODELAY`, in three named [`Profile`]s, and one
//! cache of lazily connecting channels per address ([`Channels`]).
//!
//! A channel made here does no I/O until first used, reconnects by itself after a failure, and
//! is cheap to clone (clones share the connection). Every process keeps one [`Channels`] per
//! purpose and asks it for the channel to an address; the first ask creates it.
//!
//! A node can be told which local address its connections come from
//! ([`Channels::with_source`], the server's `--source-address`): on a host with several
//! addresses the operator picks the interface, and fault-injection tests tell nodes apart by the
//! address their connections arrive from. By default the operating system chooses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use weir_common::sync::MutexExt;

use tonic::transport::{Channel, Endpoint};

/// How one kind of connection is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Time allowed to establish the TCP connection.
    pub connect_timeout: Duration,
    /// Deadline of each request on the channel; `None` leaves it to the caller.
    pub request_timeout: Option<Duration>,
    /// HTTP/2 keep-alive ping period (an idle connection to a dead peer is noticed within
    /// this plus [`Profile::keep_alive_timeout`]); `None` sends no pings.
    pub keep_alive: Option<Duration>,
    /// How long a keep-alive ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
    /// HTTP/2 initial stream window, bytes; `None` keeps hyper's 64 KiB.
    pub stream_window: Option<u32>,
    /// HTTP/2 initial connection window, bytes; `None` keeps hyper's default.
    pub connection_window: Option<u32>,
}

impl Profile {
    /// A client's connections to brokers: produce and fetch answers of several MiB must not
    /// stall on 64 KiB windows; an idle connection is checked every 10 s.
    pub const CLIENT: Profile = Profile {
        connect_timeout: Duration::from_secs(5),
        request_timeout: None,
        keep_alive: Some(Duration::from_secs(10)),
        keep_alive_timeout: Duration::from_secs(10),
        stream_window: Some(4 << 20),
        connection_window: Some(16 << 20),
    };

    /// A follower's connections to partition leaders: replica fetches bring up to 4 MiB per
    /// answer, many partitions share one connection; a leader that cannot be reached must be
    /// noticed fast (500 ms to connect).
    pub const REPLICATION: Profile = Profile {
        connect_timeout: Duration::from_millis(500),
        request_timeout: None,
        keep_alive: Some(Duration::from_secs(10)),
        keep_alive_timeout: Duration::from_secs(10),
        stream_window: Some(8 << 20),
        connection_window: Some(32 << 20),
    };

    /// Connections between controllers and from brokers to controllers (Raft, heartbeats,
    /// forwarded requests): small messages, short timeouts, so that an unreachable controller
    /// costs little and the next one is tried.
    pub const CONTROLLER: Profile = Profile {
        connect_timeout: Duration::from_millis(500),
        request_timeout: None,
        keep_alive: Some(Duration::from_secs(10)),
        keep_alive_timeout: Duration::from_secs(5),
        stream_window: None,
        connection_window: None,
    };

    /// This profile with another connect timeout.
    pub const fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// This profile with a deadline on every request.
    pub const fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }
}

/// An address that cannot be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAddress {
    /// The address as given.
    pub addr: String,
    /// Why it is not a valid `host:port` or `http://host:port`.
    pub reason: String,
}

impl std::fmt::Display for InvalidAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid address `{}`: {}", self.addr, self.reason)
    }
}

impl std::error::Error for InvalidAddress {}

/// A lazily connecting channel to `addr` (`host:port`, or a URI with a scheme), tuned by
/// `profile`, its connections made from `source` when given.
pub fn lazy(
    addr: &str,
    profile: Profile,
    source: Option<IpAddr>,
) -> Result<Channel, InvalidAddress> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let invalid = |reason: String| InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(profile.connect_timeout)
        .tcp_nodelay(true)
        .keep_alive_timeout(profile.keep_alive_timeout)
        .initial_stream_window_size(profile.stream_window)
        .initial_connection_window_size(profile.connection_window);
    if endpoint.uri().host().is_none_or(str::is_empty) || endpoint.uri().port_u16().is_none() {
        return Err(invalid("expected host:port".into()));
    }
    if let Some(timeout) = profile.request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    if let Some(interval) = profile.keep_alive {
        endpoint = endpoint.http2_keep_alive_interval(interval);
    }
    Ok(match source {
        None => endpoint.connect_lazy(),
        Some(ip) => {
            // tonic's own connector cannot bind a local address; hyper's can. The endpoint's
            // connect timeout still applies around it.
            let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(profile.connect_timeout));
            http.set_local_address(Some(ip));
            endpoint.connect_with_connector_lazy(http)
        }
    })
}

/// One lazily connecting [`Channel`] per address, all tuned by one [`Profile`]. Shared by
/// reference; the lock is never held across an `.await`.
#[derive(Debug)]
pub struct Channels {
    profile: Profile,
    source: Option<IpAddr>,
    cache: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    /// An empty cache for channels tuned by `profile`.
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            source: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The same, with connections made from local address `source` (when `Some`).
    pub fn with_source(mut self, source: Option<IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// The profile the channels use.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The channel to `addr`, created (without I/O) on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, InvalidAddress> {
        // A poisoned lock only means a thread panicked while inserting; the map is still a
        // valid cache.
        let mut cache = self.cache.locked();
        if let Some(channel) = cache.get(addr) {
            return Ok(channel.clone());
        }
        let channel = lazy(addr, self.profile, self.source)?;
        cache.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The addresses with a channel, in no particular order.
    pub fn addresses(&self) -> Vec<String> {
        let cache = self.cache.locked();
        cache.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_checked_and_channels_cached() {
        let channels = Channels::new(Profile::CONTROLLER);
        assert!(channels.get("127.0.0.1:9701").is_ok());
        assert!(channels.get("http://127.0.0.1:9702").is_ok());
        assert_eq!(channels.addresses().len(), 2);
        channels.get("127.0.0.1:9701").unwrap();
        assert_eq!(
            channels.addresses().len(),
            2,
            "the second ask reuses the channel"
        );
        for bad in ["", "no port", "127.0.0.1", "http://:80", "a b:1"] {
            let err = channels.get(bad).unwrap_err();
            assert_eq!(err.addr, bad);
        }
    }

    #[tokio::test]
    async fn connections_come_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.42".parse().unwrap();
        let channel = lazy(&addr.to_string(), Profile::CONTROLLER, Some(source)).unwrap();
        let call = tokio::spawn(async move {
            let mut client =
                crate::controller::v1::controller_client::ControllerClient::new(channel);
            let _ = client
                .describe_cluster(crate::controller::v1::DescribeClusterRequest {})
                .await;
        });
        let (_, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the channel connected")
            .unwrap();
        assert_eq!(peer.ip(), source);
        call.abort();
    }
}
