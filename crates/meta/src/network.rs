//! Raft over gRPC: how the controllers of the metadata quorum reach each other.
//!
//! The wire contract is `proto/raft.proto` (package `weir.raft.v1`): three unary RPCs,
//! `AppendEntries`, `Vote` and `InstallSnapshot`, each carrying one openraft request and
//! answering one openraft response, serialized with bincode 1 in a `RaftMessage { payload }`.
//! The response payload is bincode of `Result<Response, RaftError>`, so an error the remote
//! Raft node raised (it is shutting down, its storage failed) comes back typed. openraft 0.9
//! already splits snapshots into `InstallSnapshotRequest` chunks of at most
//! `Config::snapshot_max_chunk_size` bytes, one RPC each.
//!
//! - Sending side: [`Network`] is openraft's [`RaftNetworkFactory`]. It keeps one tonic
//!   [`Channel`] per peer address (created lazily, reconnecting by itself), shared by every
//!   [`NetworkConnection`] it hands out; a connection is openraft's [`RaftNetwork`] to one peer.
//!   Every RPC is bounded by the `hard_ttl` openraft passes in its [`RPCOption`] (locally, and as
//!   the gRPC deadline). Failures map to openraft's error kinds:
//!   - the peer cannot be reached (connection refused, connect timeout, deadline exceeded, bad
//!     address) → [`RPCError::Unreachable`], so openraft backs off before retrying;
//!   - the peer answered, but not with something we can read (undecodable response, a gRPC error
//!     status other than the ones above) → [`RPCError::Network`];
//!   - the peer's Raft node failed the request → [`RPCError::RemoteError`].
//! - Receiving side: [`RaftService`] implements the generated gRPC server trait on top of a
//!   running [`Raft`]; [`raft_server`] wraps it in a server that accepts snapshot-chunk-sized
//!   messages. A payload that does not decode is refused with `INVALID_ARGUMENT`, and so is one
//!   that openraft must never see: a term more than [`MAX_TERM_LEAP`] ahead of this node's, a
//!   sender that is not a voter of the membership this node knows, log ids of a later term
//!   than the sender's vote, a snapshot chunk past [`MAX_SNAPSHOT_BYTES`].
//!
//! Bytes from the network are never trusted: decoding failures are errors, never panics.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use weir_common::sync::MutexExt;

use openraft::error::{
    Infallible, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::Code;
use weir_proto::channel::{Channels, Profile};
use weir_proto::raft::v1::raft_client::RaftClient;
use weir_proto::raft::v1::raft_server::{Raft as RaftRpc, RaftServer};
use weir_proto::raft::v1::RaftMessage;

use crate::election::{Election, PreVoteRequest, PreVoteResponse, ProbeRequest, ProbeResponse};
use crate::types::{Node, NodeId, Raft, TypeConfig};

/// Largest gRPC message the Raft service and client accept or send: room for a snapshot chunk
/// (openraft's default `snapshot_max_chunk_size` is 3 MiB) or a large batch of log entries,
/// bincode overhead included.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// openraft's [`RaftNetworkFactory`] over gRPC: hands out a [`NetworkConnection`] per target,
/// all sharing one cached tonic [`Channel`] per peer address ([`Channels`], tuned by
/// [`Profile::CONTROLLER`] unless told otherwise).
///
/// Cloning is cheap and clones share the channel cache.
#[derive(Clone, Debug)]
pub struct Network {
    channels: Arc<Channels>,
}

impl Network {
    /// A network with an empty channel cache and [`Profile::CONTROLLER`].
    pub fn new() -> Self {
        Self::with_channels(Channels::new(Profile::CONTROLLER))
    }

    /// A network over `channels` (a profile and source address of the caller's choosing).
    pub fn with_channels(channels: Channels) -> Self {
        Self {
            channels: Arc::new(channels),
        }
    }

    /// The channel to `addr` ("host:port", or a full `http://host:port` URI), created lazily
    /// (no I/O here) and cached. Fails only if `addr` is not a valid URI authority.
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        self.channels.get(addr).map_err(|e| e.to_string())
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> NetworkConnection {
        let client = self.channel(&node.addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE)
        });
        NetworkConnection {
            target,
            node: node.clone(),
            client,
        }
    }
}

/// openraft's [`RaftNetwork`] to one peer, made by [`Network::new_client`].
pub struct NetworkConnection {
    /// The peer's node id.
    target: NodeId,
    /// The peer's node (its controller address).
    node: Node,
    /// The gRPC client, or why the address is unusable.
    client: Result<RaftClient<Channel>, String>,
}

impl fmt::Debug for NetworkConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkConnection")
            .field("target", &self.target)
            .field("addr", &self.node.addr)
            .finish()
    }
}

/// Which RPC of the `weir.raft.v1.Raft` service a call is.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rpc::AppendEntries => "AppendEntries",
            Rpc::Vote => "Vote",
            Rpc::InstallSnapshot => "InstallSnapshot",
        })
    }
}

/// The error type of a failed RPC to `target`, whose remote errors are `RaftError<NodeId, E>`.
type RpcResult<T, E> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl NetworkConnection {
    /// Sends `req` as `rpc` and decodes the `Result<Resp, RaftError<NodeId, E>>` it answers,
    /// within `option.hard_ttl()`.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => {
                return Err(RPCError::Unreachable(Unreachable::from(
                    self.context(AnyError::error(reason), rpc),
                )))
            }
        };
        let payload = bincode::serialize(req).map_err(|e| {
            RPCError::Network(NetworkError::from(
                self.context(AnyError::new(&*e), rpc)
                    .add_context(|| "encoding the request"),
            ))
        })?;
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftMessage {
            payload: payload.into(),
        });
        request.set_timeout(ttl);
        let call = async move {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let response = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(self.status_error(rpc, &status)),
            Err(_elapsed) => {
                return Err(RPCError::Unreachable(Unreachable::from(self.context(
                    AnyError::error(format!("no answer within {ttl:?}")),
                    rpc,
                ))))
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = bincode::deserialize(&response.payload)
            .map_err(|e| {
                RPCError::Network(NetworkError::from(
                    self.context(AnyError::new(&*e), rpc)
                        .add_context(|| "decoding the response"),
                ))
            })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// Maps a gRPC error status to openraft's error kinds: transport failures and deadlines make
    /// the peer unreachable (openraft backs off), anything else is a network error.
    fn status_error<E: Error>(
        &self,
        rpc: Rpc,
        status: &tonic::Status,
    ) -> RPCError<NodeId, Node, E> {
        let error = self.context(AnyError::new(status), rpc);
        match status.code() {
            // Connection refused or reset, connect timeout, deadline exceeded, and transport
            // errors tonic could not classify.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                RPCError::Unreachable(Unreachable::from(error))
            }
            _ => RPCError::Network(NetworkError::from(error)),
        }
    }

    /// Says which RPC to which peer failed.
    fn context(&self, error: AnyError, rpc: Rpc) -> AnyError {
        error.add_context(|| format!("Raft {rpc} to node {} at {}", self.target, self.node.addr))
    }
}

impl RaftNetwork<TypeConfig> for NetworkConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, Infallible> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, Infallible> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

/// The receiving side of `weir.raft.v1.Raft`: hands each decoded request to the local Raft node
/// and encodes its `Result` back. Serve it with [`raft_server`].
#[derive(Clone)]
pub struct RaftService {
    /// The local Raft node.
    raft: Raft,
    /// The pre-vote driver, told of every accepted leader message; `None`: openraft's own
    /// elections (pre-votes are then granted).
    election: Option<Arc<Election>>,
    /// The snapshot being received, by id, and how many of its bytes openraft has accepted: a
    /// chunk must start at 0 or at most there, so a snapshot in memory holds only bytes that
    /// were sent (a chunk far past the end made the receiver zero-fill up to it).
    receiving: Arc<std::sync::Mutex<Reception>>,
}

/// The snapshot a follower is receiving: its id and how many of its bytes openraft accepted.
#[derive(Debug, Default)]
struct Reception(Option<(String, u64)>);

impl Reception {
    /// A chunk of snapshot `id` at `offset` may be given to openraft: it starts a snapshot (0)
    /// or does not leave a gap after the bytes received (a resent chunk starts before).
    fn check(&self, id: &str, offset: u64) -> Result<(), String> {
        let received = match &self.0 {
            Some((receiving, received)) if receiving == id => *received,
            _ => 0,
        };
        if offset > received {
            return Err(format!(
                "snapshot {id} chunk at offset {offset} does not follow the {received} bytes received"
            ));
        }
        Ok(())
    }

    /// Openraft accepted the chunk of snapshot `id` ending at `end`; `done`: it was the last.
    fn accepted(&mut self, id: &str, end: u64, done: bool) {
        self.0 = match self.0.take() {
            _ if done => None,
            Some((receiving, received)) if receiving == id => Some((receiving, received.max(end))),
            _ => Some((id.to_owned(), end)),
        };
    }
}

impl RaftService {
    /// A service feeding `raft`.
    pub fn new(raft: Raft) -> Self {
        Self {
            raft,
            election: None,
            receiving: Arc::default(),
        }
    }

    /// The same, answering pre-votes and noting leader contact for `election`.
    pub fn with_election(mut self, election: Arc<Election>) -> Self {
        self.election = Some(election);
        self
    }

    fn heard_from_leader(&self) {
        if let Some(e) = &self.election {
            e.heard_from_leader();
        }
    }
}

impl fmt::Debug for RaftService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

/// The gRPC server of the controller Raft service for `raft`, accepting messages up to
/// [`MAX_MESSAGE_SIZE`] (snapshot chunks). Add it to a `tonic::transport::Server`.
pub fn raft_server(service: RaftService) -> RaftServer<RaftService> {
    RaftServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// Decodes a request payload; garbage is the caller's fault (`INVALID_ARGUMENT`).
fn decode_request<T: DeserializeOwned>(
    request: tonic::Request<RaftMessage>,
    what: &str,
) -> Result<T, Box<tonic::Status>> {
    bincode::deserialize(&request.into_inner().payload).map_err(|e| {
        Box::new(tonic::Status::invalid_argument(format!(
            "payload is not a bincode {what}: {e}"
        )))
    })
}

/// Encodes the local Raft node's answer.
fn encode_response<T: Serialize>(
    result: &T,
) -> Result<tonic::Response<RaftMessage>, Box<tonic::Status>> {
    match bincode::serialize(result) {
        Ok(payload) => Ok(tonic::Response::new(RaftMessage {
            payload: payload.into(),
        })),
        Err(e) => Err(Box::new(tonic::Status::internal(format!(
            "encoding the Raft response: {e}"
        )))),
    }
}

/// How far ahead of this node's term a request's term may be. A real leader is ahead only by
/// the elections this node missed (one or two terms each); a million means a node missed a
/// million elections. Beyond it, a term is hostile or corrupt, and openraft's term arithmetic
/// must never see it (a vote of term `u64::MAX` panicked its engine and wedged the quorum).
pub const MAX_TERM_LEAP: u64 = 1_000_000;

/// Largest metadata snapshot a follower accepts, bytes (offset + chunk): a snapshot is received
/// in memory. The metadata of a million partitions is under 100 MB (about 80 bytes each); a
/// chunk past the limit, or one that does not follow the bytes received so far, is refused
/// before anything is allocated.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// Largest log index accepted in a request: far beyond any real log, far below overflow.
const MAX_LOG_INDEX: u64 = 1 << 48;

fn refuse(what: String) -> tonic::Status {
    tonic::Status::invalid_argument(what)
}

impl RaftService {
    /// Checks a request's vote before openraft sees it: its term within [`MAX_TERM_LEAP`] of
    /// this node's, and its node a voter of the membership this node knows (when it knows one;
    /// an empty node learns the membership from the leader).
    fn check_vote(&self, vote: &openraft::Vote<NodeId>) -> Result<(), String> {
        let (term, voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let node = vote.leader_id().node_id;
            let known = membership.voter_ids().next().is_some();
            (
                m.current_term,
                !known || membership.voter_ids().any(|v| v == node),
            )
        };
        let asked = vote.leader_id().term;
        if asked > term.saturating_add(MAX_TERM_LEAP) {
            return Err(format!(
                "term {asked} is more than {MAX_TERM_LEAP} ahead of this node's term {term}"
            ));
        }
        if !voter {
            return Err(format!(
                "node {} is not a voter of the metadata quorum",
                vote.leader_id().node_id
            ));
        }
        Ok(())
    }

    /// A log id sent by the leader of term `term`: no later term than its own, a sane index.
    fn check_log_id(
        log_id: Option<&openraft::LogId<NodeId>>,
        term: u64,
        what: &str,
    ) -> Result<(), String> {
        let Some(id) = log_id else {
            return Ok(());
        };
        if id.leader_id.term > term || id.index > MAX_LOG_INDEX {
            return Err(format!(
                "{what} {id} is not one the leader of term {term} can send"
            ));
        }
        Ok(())
    }

    fn check_append(&self, req: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
        self.check_vote(&req.vote)?;
        let term = req.vote.leader_id().term;
        Self::check_log_id(req.prev_log_id.as_ref(), term, "prev_log_id")?;
        Self::check_log_id(req.leader_commit.as_ref(), term, "leader_commit")?;
        for entry in &req.entries {
            Self::check_log_id(Some(&entry.log_id), term, "entry")?;
        }
        Ok(())
    }

    fn check_snapshot(&self, req: &InstallSnapshotRequest<TypeConfig>) -> Result<(), String> {
        self.check_vote(&req.vote)?;
        let term = req.vote.leader_id().term;
        Self::check_log_id(req.meta.last_log_id.as_ref(), term, "snapshot last_log_id")?;
        let end = req.offset.checked_add(req.data.len() as u64);
        if end.is_none_or(|end| end > MAX_SNAPSHOT_BYTES) {
            return Err(format!(
                "snapshot chunk at offset {} (+{} bytes) is past the {MAX_SNAPSHOT_BYTES}-byte limit",
                req.offset,
                req.data.len()
            ));
        }
        self.receiving
            .locked()
            .check(&req.meta.snapshot_id, req.offset)
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            decode_request(request, "AppendEntriesRequest").map_err(|e| *e)?;
        self.check_append(&req).map_err(refuse)?;
        let result = self.raft.append_entries(req).await;
        // Any answer but "your vote is stale" means the sender is the leader this node follows.
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.heard_from_leader();
        }
        encode_response(&result).map_err(|e| *e)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: VoteRequest<NodeId> = decode_request(request, "VoteRequest").map_err(|e| *e)?;
        self.check_vote(&req.vote).map_err(refuse)?;
        Self::check_log_id(
            req.last_log_id.as_ref(),
            req.vote.leader_id().term,
            "last_log_id",
        )
        .map_err(refuse)?;
        if self.election.as_ref().is_some_and(|e| e.votes_withheld()) {
            return Err(tonic::Status::unavailable(
                "this voter lost its metadata store and withholds its vote until it has caught up",
            ));
        }
        encode_response(&self.raft.vote(req).await).map_err(|e| *e)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: InstallSnapshotRequest<TypeConfig> =
            decode_request(request, "InstallSnapshotRequest").map_err(|e| *e)?;
        self.check_snapshot(&req).map_err(refuse)?;
        let vote = req.vote;
        let (id, end, done) = (
            req.meta.snapshot_id.clone(),
            req.offset + req.data.len() as u64,
            req.done,
        );
        let result = self.raft.install_snapshot(req).await;
        if matches!(&result, Ok(r) if r.vote == vote) {
            self.heard_from_leader();
            self.receiving.locked().accepted(&id, end, done);
        }
        encode_response(&result).map_err(|e| *e)
    }

    async fn pre_vote(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let req: PreVoteRequest = decode_request(request, "PreVoteRequest").map_err(|e| *e)?;
        let answer = match &self.election {
            Some(election) => election.answer(&req).await,
            None => PreVoteResponse {
                granted: true,
                term: self.raft.metrics().borrow().current_term,
                reason: String::new(),
            },
        };
        encode_response(&answer).map_err(|e| *e)
    }

    async fn probe(
        &self,
        request: tonic::Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
        let _: ProbeRequest = decode_request(request, "ProbeRequest").map_err(|e| *e)?;
        encode_response(&ProbeResponse::of(&self.raft)).map_err(|e| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::Reception;

    #[test]
    fn snapshot_chunks_must_follow_the_bytes_received() {
        let mut r = Reception::default();
        assert!(r.check("a", 0).is_ok());
        assert!(r.check("a", 1).is_err(), "a gap before any byte");
        r.accepted("a", 100, false);
        assert!(r.check("a", 100).is_ok(), "the next chunk");
        assert!(r.check("a", 40).is_ok(), "a resent chunk");
        assert!(r.check("a", 101).is_err(), "a gap");
        assert!(r.check("b", 100).is_err(), "another snapshot starts at 0");
        assert!(r.check("b", 0).is_ok());
        r.accepted("b", 10, false);
        assert!(r.check("a", 50).is_err(), "a was replaced by b");
        r.accepted("b", 20, true);
        assert!(r.check("b", 10).is_err(), "b is complete");
    }
}
