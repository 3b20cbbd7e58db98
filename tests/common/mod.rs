//! Cluster test harness: real `weir-server` processes on 127.0.0.1 with free ports and temp
//! data directories. Every wait polls a condition against a deadline; every process is killed
//! when the cluster is dropped, also when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod netfault;
pub mod workload;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir_common::sync::MutexExt;

use tonic::transport::Channel;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::controller::v1 as pb;
use weir_proto::controller::v1::controller_client::ControllerClient;

/// Cluster tests of one file run one at a time: each starts several processes on a 2-core
/// machine. Hold the guard for the whole test (across awaits, on purpose).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.locked()
}

/// How long a cluster may take to start, elect a controller and register its brokers.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Path of the server binary built by cargo for these tests.
pub const SERVER: &str = env!("CARGO_BIN_EXE_weir-server");

/// The server binary the cluster runs: `WEIR_TEST_SERVER_BIN` when set (to run the same tests
/// against another build, e.g. to show a test fails without its fix), else [`SERVER`].
pub fn server_bin() -> String {
    std::env::var("WEIR_TEST_SERVER_BIN").unwrap_or_else(|_| SERVER.to_owned())
}

/// Whether the nodes choose their broker and HTTP ports (port 0, named in their listeners
/// file): yes but for another build under `WEIR_TEST_SERVER_BIN`, which may predate the file.
fn binds_port_zero() -> bool {
    std::env::var_os("WEIR_TEST_SERVER_BIN").is_none()
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range: a port bound to 0 comes
/// from that range, where any outgoing connection (a client, a peer dialling another node) may
/// take it before the node binds it, or while a killed node is down before its restart — seen
/// here as "Address already in use" at a node's start. Ports below the range are only ever
/// taken by a bind; each is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.clamp(12_000, 65_535));
    let span = high - low;
    // Start each test process somewhere else in the range, so consecutive test binaries
    // (whose nodes may still be exiting) do not reuse each other's ports.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() * 7919 % span + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in [{low}, {high})");
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The error code of an answer; an absent error is NONE.
pub fn code(error: &Option<weir_proto::common::v1::Error>) -> i32 {
    error.as_ref().map_or(0, |e| e.code)
}

pub fn code_name(code: i32) -> String {
    weir_proto::common::v1::ErrorCode::try_from(code)
        .map(|c| c.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("unknown code {code}"))
}

/// Asserts the answer's error code; an error must come with a message a person can act on.
#[track_caller]
pub fn assert_code(
    error: &Option<weir_proto::common::v1::Error>,
    expected: weir_proto::common::v1::ErrorCode,
    what: &str,
) {
    let got = code(error);
    assert_eq!(
        got,
        expected as i32,
        "{what}: expected {}, got {} ({:?})",
        expected.as_str_name(),
        code_name(got),
        error
    );
    if expected != weir_proto::common::v1::ErrorCode::None {
        let message = error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
        assert!(!message.is_empty(), "{what}: the error has no message");
    }
}

/// Removes `dir` and everything in it; a wipe that did not happen would turn a wiped-node
/// test into a plain restart.
fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("wiping {}: {e}", dir.display()),
    }
    assert!(
        !dir.exists(),
        "{} still exists after the wipe",
        dir.display()
    );
}

/// One node's process and addresses.
pub struct Node {
    pub id: u64,
    /// Its broker listener's port: 0 until its first start, which binds a free one (the node
    /// names it in its listeners file); restarts bind the same port again.
    pub broker_port: u16,
    /// Its controller listener's port: chosen here, since the quorum's configuration names it.
    pub controller_port: u16,
    /// Its HTTP listener's port, chosen by the node as `broker_port` is.
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub voter: bool,
    /// Ports of the fault-injecting proxies in front of its broker and controller listeners
    /// (the addresses it advertises), when the cluster has a [`netfault::Network`].
    pub proxy: Option<(u16, u16)>,
    child: Option<Child>,
    log: PathBuf,
    starts: usize,
}

impl Node {
    /// host:port other nodes dial for its controller listener (its proxy, if it has one).
    pub fn controller_addr(&self) -> String {
        let port = self.proxy.map_or(self.controller_port, |(_, c)| c);
        format!("127.0.0.1:{port}")
    }

    /// host:port of the controller listener itself, past any proxy: for the test's own
    /// observations, which network faults must not hide.
    pub fn direct_controller_addr(&self) -> String {
        format!("127.0.0.1:{}", self.controller_port)
    }

    /// host:port of the broker (clients and replication) as metadata names it: its proxy, if
    /// it has one.
    pub fn broker_addr(&self) -> String {
        let port = self.proxy.map_or(self.broker_port, |(b, _)| b);
        format!("127.0.0.1:{port}")
    }

    /// host:port of the broker listener itself, past any proxy.
    pub fn direct_broker_addr(&self) -> String {
        format!("127.0.0.1:{}", self.broker_port)
    }

    /// The broker and HTTP ports the running node bound, from the listeners file it writes
    /// once every listener is up (`weir_server::LISTENERS_FILE`). Waits for it, as long as the
    /// process runs and at most [`STARTUP`].
    fn bound_ports(&mut self) -> (u16, u16) {
        let file = self.data_dir.join(weir_server::LISTENERS_FILE);
        let deadline = std::time::Instant::now() + STARTUP;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let port = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
                        .map(|a| a.port())
                };
                if let (Some(broker), Some(http)) = (port("broker"), port("http")) {
                    return (broker, http);
                }
            }
            assert!(
                self.is_running(),
                "node {} exited before binding its listeners; see {}",
                self.id,
                self.log.display()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "node {} named no bound listeners within {STARTUP:?}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// A cluster of real processes.
pub struct Cluster {
    pub nodes: Vec<Node>,
    quorum: String,
    env: Vec<(String, String)>,
    /// The proxies between the nodes, when started with [`Cluster::start_proxied`].
    network: Option<netfault::Network>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `voters` combined nodes (ids 1..) and `learners` broker-only nodes after them.
    pub fn start(voters: u64, learners: u64, env: &[(&str, &str)]) -> Self {
        Self::start_with(voters, learners, env, false)
    }

    /// Starts `voters` combined nodes behind fault-injecting proxies ([`Cluster::net`]), and
    /// waits as [`Cluster::start_ready`] does.
    pub async fn start_proxied(voters: u64, env: &[(&str, &str)]) -> (Self, u64) {
        let mut cluster = Self::start_with(voters, 0, env, true);
        let controller = cluster.wait_ready(voters).await;
        (cluster, controller)
    }

    fn start_with(voters: u64, learners: u64, env: &[(&str, &str)], proxied: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        let network = proxied.then(|| netfault::Network::new((1..=voters + learners).collect()));
        for id in 1..=voters + learners {
            let node = Node {
                id,
                // A proxy is told the address behind it before the node starts.
                broker_port: if proxied || !binds_port_zero() {
                    free_port()
                } else {
                    0
                },
                controller_port: free_port(),
                http_port: if binds_port_zero() { 0 } else { free_port() },
                data_dir: dir.path().join(format!("node-{id}")),
                voter: id <= voters,
                proxy: proxied.then(|| (free_port(), free_port())),
                child: None,
                log: dir.path().join(format!("node-{id}.log")),
                starts: 0,
            };
            if let (Some(net), Some((b, c))) = (&network, node.proxy) {
                net.proxy(id, b, node.direct_broker_addr().parse().unwrap());
                net.proxy(id, c, node.direct_controller_addr().parse().unwrap());
            }
            nodes.push(node);
        }
        let quorum = nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| format!("{}@{}", n.id, n.controller_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cluster = Self {
            nodes,
            quorum,
            env,
            network,
            dir,
        };
        for id in 1..=voters + learners {
            cluster.spawn(id);
        }
        cluster
    }

    /// Starts `voters` combined nodes and waits until every one is healthy, a controller leads
    /// and every broker is active; returns the cluster and the controller leader.
    pub async fn start_ready(voters: u64, env: &[(&str, &str)]) -> (Self, u64) {
        let mut cluster = Self::start(voters, 0, env);
        let controller = cluster.wait_ready(voters).await;
        (cluster, controller)
    }

    async fn wait_ready(&mut self, voters: u64) -> u64 {
        self.wait_healthy(STARTUP).await;
        let controller = self.wait_leader(STARTUP).await;
        self.wait_active_brokers(controller, voters as usize, STARTUP)
            .await;
        controller
    }

    /// The network between the nodes (only for [`Cluster::start_proxied`] clusters).
    pub fn net(&self) -> &netfault::Network {
        self.network
            .as_ref()
            .expect("the cluster was not started with proxies")
    }

    /// Every node's broker address (host:port), in node order: a bootstrap list.
    pub fn broker_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Node::broker_addr).collect()
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts (or restarts) node `id`'s process.
    pub fn spawn(&mut self, id: u64) {
        let quorum = self.quorum.clone();
        let env = self.env.clone();
        let node = self.node(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = Command::new(server_bin());
        cmd.env("WEIR_NODE_ID", id.to_string())
            .env(
                "WEIR_ROLES",
                if node.voter {
                    "broker,controller"
                } else {
                    "broker"
                },
            )
            .env("WEIR_LISTEN", node.direct_broker_addr())
            .env("WEIR_CONTROLLER_LISTEN", node.direct_controller_addr())
            .env("WEIR_HTTP_LISTEN", format!("127.0.0.1:{}", node.http_port))
            .env("WEIR_CONTROLLER_QUORUM", quorum)
            .env("WEIR_DATA_DIR", &node.data_dir)
            .env("WEIR_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if node.proxy.is_some() {
            cmd.env("WEIR_ADVERTISED_LISTENER", node.broker_addr()).env(
                "WEIR_SOURCE_ADDRESS",
                netfault::source_address(id).to_string(),
            );
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        node.child = Some(cmd.spawn().expect("spawning weir-server"));
        if node.broker_port == 0 || node.http_port == 0 {
            let (broker, http) = node.bound_ports();
            (node.broker_port, node.http_port) = (broker, http);
        }
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&mut self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    /// A field of node `id`'s `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM` = peak RSS).
    pub fn memory_kb(&mut self, id: u64, field: &str) -> Option<u64> {
        let pid = self.pid(id)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// SIGKILL: the process dies with no chance to clean up.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (at most 15 s) for a clean exit; returns the exit status success.
    pub fn terminate(&mut self, id: u64) -> bool {
        let Some(mut child) = self.node(id).child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Sends SIGTERM and returns at once (the node shuts down cleanly on its own time; reap it
    /// with [`Cluster::terminate`]).
    pub fn sigterm(&mut self, id: u64) {
        let child = self.node(id).child.as_ref().expect("node not running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }

    /// SIGSTOP / SIGCONT: freeze a node as if cut off from the network.
    pub fn pause(&mut self, id: u64, paused: bool) {
        let child = self.node(id).child.as_ref().expect("node not running");
        let signal = if paused { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status();
    }

    /// Removes a (stopped) node's data directory.
    pub fn wipe(&mut self, id: u64) {
        let node = self.node(id);
        assert!(node.child.is_none(), "stop node {id} before wiping it");
        remove_dir(&node.data_dir);
    }

    /// Removes a (stopped) node's partition logs but keeps its metadata store: a broker that
    /// lost its disk of data while its controller identity survived.
    pub fn wipe_logs(&mut self, id: u64) {
        let node = self.node(id);
        assert!(node.child.is_none(), "stop node {id} before wiping it");
        remove_dir(&node.data_dir.join("logs"));
    }

    /// The tail of a node's log, for failure messages.
    pub fn log_tail(&mut self, id: u64) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        // Backtrace frames say little and would push the error itself out of view.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !(t.starts_with("at ")
                    || t.split_once(": ")
                        .is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
            })
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The lines of a node's log that contain any of `words` (ANSI colours removed), for
    /// failure reports.
    pub fn log_lines(&mut self, id: u64, words: &[&str]) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let mut out = String::new();
        for line in text.lines() {
            let mut plain = String::with_capacity(line.len());
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            if words.iter().any(|w| plain.contains(w)) {
                out.push_str(&plain);
                out.push('\n');
            }
        }
        out
    }

    /// Panic messages in a node's log (with the lines after them), for failure messages.
    pub fn log_panics(&mut self, id: u64) -> String {
        let text = std::fs::read_to_string(&self.node(id).log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked") && !line.contains("core_result") {
                out.push_str(&lines[i..(i + 5).min(lines.len())].join("\n"));
                out.push('\n');
            }
        }
        if out.is_empty() {
            out
        } else {
            format!("it panicked:\n{out}")
        }
    }

    /// A controller client for node `id` (lazy: never blocks).
    pub fn client(&mut self, id: u64) -> ControllerClient<Channel> {
        let addr = self.node(id).direct_controller_addr();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        ControllerClient::new(channel)
    }

    /// A broker client for node `id`'s broker listener (lazy: never blocks).
    pub fn broker_client(&mut self, id: u64) -> BrokerClient<Channel> {
        let addr = self.node(id).direct_broker_addr();
        broker_client_at(&addr)
    }

    /// Ids of the nodes whose process is running.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect()
    }

    /// Waits until DescribeCluster through node `via` lists at least `n` active brokers.
    pub async fn wait_active_brokers(&mut self, via: u64, n: usize, timeout: Duration) {
        let what = format!("{n} active brokers");
        wait_for(&what, timeout, || {
            let view = self.describe_cluster_via(via);
            async move {
                let r = view.await?;
                (r.brokers
                    .iter()
                    .filter(|b| b.state() == weir_proto::common::v1::BrokerState::Active)
                    .count()
                    >= n)
                    .then_some(())
            }
        })
        .await;
    }

    /// Creates a topic with config overrides through node `via`'s controller listener.
    pub async fn create_topic_with(
        &mut self,
        via: u64,
        name: &str,
        partitions: i32,
        rf: i32,
        configs: &[(&str, &str)],
    ) -> Result<pb::CreateTopicResponse, tonic::Status> {
        let mut client = self.client(via);
        let req = pb::CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        client.create_topic(req).await.map(|r| r.into_inner())
    }

    /// GET /health of node `id`: the status code, or `None` if nothing answers.
    pub fn health(&mut self, id: u64) -> Option<u16> {
        let port = self.node(id).http_port;
        http_status(port, "/health")
    }

    /// Waits until every running node answers /health with 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let ids: Vec<u64> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect();
        for id in ids {
            let port = self.node(id).http_port;
            let deadline = Instant::now() + timeout;
            while http_status(port, "/health") != Some(200) {
                if Instant::now() >= deadline {
                    let log = self.log_tail(id);
                    let panics = self.log_panics(id);
                    panic!(
                        "node {id} not healthy within {timeout:?}; {panics}its log ends:\n{log}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// DescribeCluster through node `via`, as an owned future (it does not borrow the
    /// cluster, so it fits in `wait_for` closures); `None` when the call itself fails.
    pub fn describe_cluster_via(
        &mut self,
        via: u64,
    ) -> impl std::future::Future<Output = Option<pb::DescribeClusterResponse>> + 'static {
        let mut client = self.client(via);
        async move {
            let r = client
                .describe_cluster(pb::DescribeClusterRequest {})
                .await
                .ok()?;
            Some(r.into_inner())
        }
    }

    /// The controller leader as seen by a DescribeCluster answered through node `via`.
    pub async fn leader_via(&mut self, via: u64) -> Option<u64> {
        let mut client = self.client(via);
        let r = client
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .ok()?
            .into_inner();
        (r.error.is_none() && r.controller_leader != 0).then_some(r.controller_leader)
    }

    /// Waits for a leader that answers DescribeCluster, asking any running node.
    pub async fn wait_leader(&mut self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let ids: Vec<u64> = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.is_running().then_some(n.id))
                .collect();
            for id in ids {
                if let Some(leader) = self.leader_via(id).await {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no controller leader within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a topic through node `via`; the error code (0 = success).
    pub async fn create_topic(
        &mut self,
        via: u64,
        name: &str,
        partitions: i32,
        rf: i32,
    ) -> Result<pb::CreateTopicResponse, tonic::Status> {
        let mut client = self.client(via);
        let req = pb::CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: Default::default(),
        };
        client.create_topic(req).await.map(|r| r.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(child.id().to_string())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A broker client for `addr` (host:port; lazy: never blocks). Unary calls time out after
/// 10 s; a Fetch stream is not cut by that timeout once its response headers have arrived.
pub fn broker_client_at(addr: &str) -> BrokerClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    BrokerClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A minimal HTTP/1.0 GET on 127.0.0.1:`port`; the status code or `None`.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = stream.take(4096).read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Data-path helpers: records, produce, fetch, Metadata waits, on-disk logs.
pub mod data;
