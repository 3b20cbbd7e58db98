//! Entry point for the `raft_payload` fuzz target in `fuzz/` (and its corpus replay in
//! `tests/fuzz_corpus.rs`): bytes decoded as every Raft RPC payload the controller listener
//! accepts, as it decodes them. Must not panic or allocate without bound.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::election::{PreVoteRequest, ProbeRequest};
use crate::types::{NodeId, TypeConfig};

/// Decodes `data` as each Raft request payload (bincode 1, as `network::decode_request`).
pub fn raft_payload(data: &[u8]) {
    let _ = bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = bincode::deserialize::<VoteRequest<NodeId>>(data);
    let _ = bincode::deserialize::<InstallSnapshotRequest<TypeConfig>>(data);
    let _ = bincode::deserialize::<PreVoteRequest>(data);
    let _ = bincode::deserialize::<ProbeRequest>(data);
}
