//! Raft over gRPC on real sockets (127.0.0.1, free ports): failure mapping of the client side
//! against dead, silent and misbehaving peers, then real Raft clusters (sled stores in temp
//! dirs) replicating, losing a follower, and shipping a snapshot in chunks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{Fatal, InitializeError, RPCError, RaftError};
use openraft::network::RPCOption;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, ServerState, Vote};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use weir_meta::network::{raft_server, Network, RaftService};
use weir_meta::store::{open_store, StateMachineStore};
use weir_meta::types::Raft;
use weir_meta::Command;
use weir_proto::raft::v1::raft_client::RaftClient;
use weir_proto::raft::v1::raft_server::{Raft as RaftRpc, RaftServer};
use weir_proto::raft::v1::RaftMessage;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

fn vote_request() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(1, 1), None)
}

/// An address nothing listens on: bind a free port, then close it.
fn dead_addr() -> Result<String, std::io::Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr.to_string())
}

#[tokio::test]
async fn dead_peer_is_unreachable_within_ttl() -> TestResult {
    let addr = dead_addr()?;
    let mut network = Network::new();
    let mut conn = network.new_client(2, &BasicNode::new(&addr)).await;
    let ttl = Duration::from_secs(2);
    let start = Instant::now();
    let result = conn.vote(vote_request(), RPCOption::new(ttl)).await;
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "expected Unreachable, got {result:?}"
    );
    assert!(elapsed < ttl, "took {elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn silent_peer_is_unreachable_after_ttl() -> TestResult {
    // Accepts TCP connections and never says a word (no HTTP/2 handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut network = Network::new();
    let mut conn = network.new_client(2, &BasicNode::new(&addr)).await;
    let ttl = Duration::from_millis(300);
    let start = Instant::now();
    let result = conn.vote(vote_request(), RPCOption::new(ttl)).await;
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "expected Unreachable, got {result:?}"
    );
    assert!(
        elapsed >= ttl - Duration::from_millis(50),
        "took {elapsed:?}"
    );
    assert!(elapsed < ttl + Duration::from_secs(1), "took {elapsed:?}");
    accept.abort();
    Ok(())
}

#[tokio::test]
async fn invalid_address_is_unreachable() -> TestResult {
    let mut network = Network::new();
    let mut conn = network
        .new_client(2, &BasicNode::new("not a host name:port"))
        .await;
    let result = conn
        .vote(vote_request(), RPCOption::new(Duration::from_secs(1)))
        .await;
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "expected Unreachable, got {result:?}"
    );
    Ok(())
}

/// What the fake peer answers to every RPC.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A payload that is not bincode of the expected response.
    Garbage,
    /// A gRPC error status.
    Internal,
    /// A typed remote error: the peer's Raft is stopped.
    RemoteFatal,
    /// A well-formed vote response.
    GrantVote,
}

struct FakePeer(Behaviour);

impl FakePeer {
    #[allow(clippy::result_large_err)] // the shape of a tonic handler's result
    fn answer(&self) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let payload = match self.0 {
            Behaviour::Garbage => vec![0xff; 3],
            Behaviour::Internal => return Err(tonic::Status::internal("boom")),
            Behaviour::RemoteFatal => {
                let result: Result<VoteResponse<u64>, RaftError<u64>> =
                    Err(RaftError::Fatal(Fatal::Stopped));
                bincode::serialize(&result).map_err(|e| tonic::Status::internal(e.to_string()))?
            }
            Behaviour::GrantVote => {
                let result: Result<VoteResponse<u64>, RaftError<u64>> =
                    Ok(VoteResponse::new(Vote::new(1, 1), None, true));
                bincode::serialize(&result).map_err(|e| tonic::Status::internal(e.to_string()))?
            }
        };
        Ok(tonic::Response::new(RaftMessage {
            payload: payload.into(),
        }))
    }
}

#[tonic::async_trait]
impl RaftRpc for FakePeer {
    async fn append_entries(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.answer()
    }

    async fn vote(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.answer()
    }

    async fn install_snapshot(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.answer()
    }

    async fn pre_vote(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.answer()
    }

    async fn probe(
        &self,
        _request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        self.answer()
    }
}

/// Serves a fake peer on a free port; returns its address and the server task.
async fn fake_peer(
    behaviour: Behaviour,
) -> Result<(String, tokio::task::JoinHandle<()>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let incoming = TcpIncoming::from_listener(listener, true, None)?;
    let server = Server::builder()
        .add_service(RaftServer::new(FakePeer(behaviour)))
        .serve_with_incoming(incoming);
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    Ok((addr, task))
}

async fn vote_against(
    behaviour: Behaviour,
) -> Result<Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>>, BoxError> {
    let (addr, server) = fake_peer(behaviour).await?;
    let mut network = Network::new();
    let mut conn = network.new_client(2, &BasicNode::new(&addr)).await;
    let result = conn
        .vote(vote_request(), RPCOption::new(Duration::from_secs(5)))
        .await;
    server.abort();
    Ok(result)
}

#[tokio::test]
async fn well_formed_answer_decodes() -> TestResult {
    let response = vote_against(Behaviour::GrantVote).await??;
    assert!(response.vote_granted);
    assert_eq!(response.vote, Vote::new(1, 1));
    Ok(())
}

#[tokio::test]
async fn garbage_answer_is_a_network_error() -> TestResult {
    let result = vote_against(Behaviour::Garbage).await?;
    assert!(
        matches!(result, Err(RPCError::Network(_))),
        "expected Network, got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn error_status_is_a_network_error() -> TestResult {
    let result = vote_against(Behaviour::Internal).await?;
    assert!(
        matches!(result, Err(RPCError::Network(_))),
        "expected Network, got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn remote_raft_error_travels_typed() -> TestResult {
    let result = vote_against(Behaviour::RemoteFatal).await?;
    match result {
        Err(RPCError::RemoteError(remote)) => {
            assert_eq!(remote.target, 2);
            assert!(matches!(remote.source, RaftError::Fatal(Fatal::Stopped)));
        }
        other => panic!("expected RemoteError, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn channels_are_shared_per_address() -> TestResult {
    let (addr, server) = fake_peer(Behaviour::GrantVote).await?;
    let mut network = Network::new();
    // Two connections to the same address, one to another: both addresses are cached once.
    let mut first = network.new_client(2, &BasicNode::new(&addr)).await;
    let mut second = network.clone().new_client(2, &BasicNode::new(&addr)).await;
    let _third = network.new_client(3, &BasicNode::new(dead_addr()?)).await;
    let option = RPCOption::new(Duration::from_secs(5));
    assert!(
        first
            .vote(vote_request(), option.clone())
            .await?
            .vote_granted
    );
    assert!(second.vote(vote_request(), option).await?.vote_granted);
    let debug = format!("{network:?}");
    assert_eq!(debug.matches("127.0.0.1:").count(), 2, "{debug}");
    server.abort();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Real Raft nodes (sled store in temp dirs) talking through `Network` and `raft_server`.
// ---------------------------------------------------------------------------------------------

/// How long any cluster condition may take to hold.
const WAIT: Duration = Duration::from_secs(15);

fn raft_config(snapshot_chunk: u64) -> Result<Arc<openraft::Config>, BoxError> {
    let config = openraft::Config {
        cluster_name: "weir-network-test".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_max_chunk_size: snapshot_chunk,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

/// A running controller: a Raft node on a sled store, served by `raft_server` on its own port.
struct TestNode {
    id: u64,
    raft: Raft,
    state_machine: StateMachineStore,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(
        id: u64,
        listener: tokio::net::TcpListener,
        config: Arc<openraft::Config>,
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let (log_store, state_machine) = open_store(dir.path())?;
        let raft = Raft::new(id, config, Network::new(), log_store, state_machine.clone()).await?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from_listener(listener, true, None)?;
        let server = Server::builder()
            .add_service(raft_server(RaftService::new(raft.clone())))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            });
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(Self {
            id,
            raft,
            state_machine,
            stop_server: Some(stop_server),
            server,
            _dir: dir,
        })
    }

    /// Stops Raft and the gRPC server.
    async fn stop(&mut self) -> TestResult {
        self.raft.shutdown().await?;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.server).await??;
        Ok(())
    }

    /// Waits until this node applied the log up to `index`.
    async fn applied(&self, index: u64) -> TestResult {
        self.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("node {} applies {index}", self.id))
            .await?;
        Ok(())
    }

    /// The address of broker `id` in this node's state machine, if registered.
    fn broker_address(&self, id: u64) -> Option<String> {
        let state = self.state_machine.current();
        state.brokers.get(&id).map(|b| b.address.clone())
    }
}

/// Binds `n` listeners on free ports of 127.0.0.1.
async fn listeners(n: usize) -> Result<Vec<(tokio::net::TcpListener, String)>, BoxError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        out.push((listener, addr));
    }
    Ok(out)
}

/// Starts nodes 1..=3, initializes them as one cluster and waits until all agree on a leader.
/// Returns the nodes (index i holds node i + 1) and the leader's id.
async fn three_node_cluster(
    config: Arc<openraft::Config>,
) -> Result<(Vec<TestNode>, u64), BoxError> {
    let mut members = BTreeMap::new();
    let mut nodes = Vec::new();
    for (i, (listener, addr)) in listeners(3).await?.into_iter().enumerate() {
        let id = i as u64 + 1;
        members.insert(id, BasicNode::new(&addr));
        nodes.push(TestNode::start(id, listener, config.clone()).await?);
    }
    for node in &nodes {
        match node.raft.initialize(members.clone()).await {
            Ok(()) => {}
            // Another node's election already reached this one: it is initialized.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let leader = agreed_leader(&nodes).await?;
    Ok((nodes, leader))
}

/// Waits until every node follows the same leader, in the same term, and that leader knows it
/// leads. (Early in an election a node may briefly see another leader: openraft lets a greater
/// vote of the same term take over.)
async fn agreed_leader(nodes: &[TestNode]) -> Result<u64, BoxError> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut changes = nodes[0].raft.metrics();
    loop {
        let metrics: Vec<_> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().clone())
            .collect();
        if let Some(leader) = metrics[0].current_leader {
            let agreed = metrics.iter().all(|m| {
                m.current_leader == Some(leader) && m.current_term == metrics[0].current_term
            });
            let leads = metrics
                .iter()
                .any(|m| m.id == leader && m.state == ServerState::Leader);
            if agreed && leads {
                return Ok(leader);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no agreed leader within {WAIT:?}: {metrics:?}").into());
        }
        // Re-check on any change of node 1, and at least every 50 ms for the others.
        let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
    }
}

fn register(id: u64, address: &str) -> Command {
    Command::RegisterBroker {
        id,
        address: address.to_owned(),
        rack: None,
        incarnation: 7,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_survive_a_follower_loss() -> TestResult {
    let (mut nodes, leader) = three_node_cluster(raft_config(3 * 1024 * 1024)?).await?;
    let leader_raft = nodes[leader as usize - 1].raft.clone();

    let written = leader_raft
        .client_write(register(1, "10.0.0.1:9092"))
        .await?;
    for node in &nodes {
        node.applied(written.log_id.index).await?;
        assert_eq!(
            node.broker_address(1).as_deref(),
            Some("10.0.0.1:9092"),
            "node {}",
            node.id
        );
    }

    // A payload that is not an openraft request is refused, not fed to Raft.
    let addr = leader_raft
        .metrics()
        .borrow()
        .membership_config
        .nodes()
        .find(|(id, _)| **id == leader)
        .map(|(_, node)| node.addr.clone())
        .ok_or("leader address")?;
    let mut client = RaftClient::connect(format!("http://{addr}")).await?;
    let status = client
        .vote(RaftMessage {
            payload: vec![1, 2, 3].into(),
        })
        .await
        .err()
        .ok_or("garbage accepted")?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Lose one follower: two of three still commit.
    let follower = nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .ok_or("no follower")?;
    nodes[follower as usize - 1].stop().await?;
    let written = leader_raft
        .client_write(register(2, "10.0.0.2:9092"))
        .await?;
    for node in nodes.iter().filter(|n| n.id != follower) {
        node.applied(written.log_id.index).await?;
        assert_eq!(
            node.broker_address(2).as_deref(),
            Some("10.0.0.2:9092"),
            "node {}",
            node.id
        );
    }

    for node in nodes.iter_mut().filter(|n| n.id != follower) {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_reaches_a_new_learner_in_chunks() -> TestResult {
    // Tiny chunks: the snapshot travels in many InstallSnapshot RPCs.
    let config = raft_config(64)?;
    let (mut nodes, leader) = three_node_cluster(config.clone()).await?;
    let leader_raft = nodes[leader as usize - 1].raft.clone();

    let mut last = 0;
    for id in 1..=20 {
        let written = leader_raft
            .client_write(register(id, &format!("10.0.0.{id}:9092")))
            .await?;
        last = written.log_id.index;
    }
    // Snapshot and purge the leader's log, so a newcomer can only catch up from the snapshot.
    leader_raft.trigger().snapshot().await?;
    leader_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last),
            "leader snapshot",
        )
        .await?;
    leader_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= last),
            "leader purges its log",
        )
        .await?;

    let (listener, addr) = listeners(1).await?.pop().ok_or("no listener")?;
    let mut learner = TestNode::start(4, listener, config).await?;
    leader_raft
        .add_learner(4, BasicNode::new(&addr), true)
        .await?;
    learner.applied(last).await?;
    let metrics = learner.raft.metrics().borrow().clone();
    assert!(
        metrics.snapshot.is_some_and(|s| s.index >= last),
        "learner installed no snapshot: {metrics:?}"
    );
    for id in 1..=20 {
        assert_eq!(
            learner.broker_address(id),
            Some(format!("10.0.0.{id}:9092"))
        );
    }

    learner.stop().await?;
    for node in &mut nodes {
        node.stop().await?;
    }
    Ok(())
}
