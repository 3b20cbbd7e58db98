//! The openraft type configuration of the metadata quorum, and short names for the openraft
//! types used across the crate.

use std::io::Cursor;

use crate::command::{Command, CommandResult};

/// Id of a node: the same number names its broker and its controller (`--node-id`).
pub type NodeId = u64;

/// What the quorum knows of a node: its controller (Raft) address.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// Weir's openraft types: the log carries [`Command`]s, applying one yields a
    /// [`CommandResult`], snapshots are serialized [`crate::state::MetadataState`]s.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A running Raft node of the metadata quorum.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log id (term + leader + index).
pub type LogId = openraft::LogId<NodeId>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft vote.
pub type Vote = openraft::Vote<NodeId>;
/// Stored membership (voters and learners with their addresses).
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// A storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;
