//! sled-backed openraft storage for the metadata quorum: the Raft log ([`LogStore`]) and the
//! state machine with its snapshots ([`StateMachineStore`]), sharing one [`sled::Db`].
//!
//! # Layout
//!
//! One sled database (a directory) holds three trees:
//!
//! - `logs`: log index as 8 big-endian bytes (so keys sort by index) → bincode of the
//!   [`Entry`](crate::types::Entry);
//! - `meta`: `vote`, `committed` and `last_purged` → bincode of the vote / log id;
//! - `snapshot`: `current` → bincode of the snapshot metadata and the snapshot bytes.
//!
//! # Durability
//!
//! Everything openraft relies on being durable is flushed to disk (`flush_async().await`, which
//! fsyncs the whole database) before the call returns or, for `append`, before the flush callback
//! is called: the vote, appended entries, truncations, purges and the committed log id.
//!
//! The applied state ([`crate::state::MetadataState`], the last applied log id and the last
//! applied membership) lives in memory only; `apply` writes nothing to disk. It is made durable
//! by two things together:
//!
//! 1. snapshots, persisted (and flushed) in the `snapshot` tree when built or installed, and
//!    loaded into the state machine when the store is opened; and
//! 2. the log, which keeps every committed entry after the snapshot (openraft purges only
//!    entries a persisted snapshot covers), plus the persisted committed log id.
//!
//! On start, openraft compares the state machine's last applied log id (the snapshot's) with the
//! saved committed log id and re-applies the committed entries in between, so the state machine
//! reaches exactly the state it had before the restart.

mod log_store;
mod state_machine;

use std::path::Path;

use openraft::{AnyError, StorageIOError};

pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

use crate::types::{NodeId, StorageError};

/// Name of the tree holding log entries.
const LOGS_TREE: &str = "logs";
/// Name of the tree holding the vote, the committed and the last purged log id.
const META_TREE: &str = "meta";
/// Name of the tree holding the current snapshot.
const SNAPSHOT_TREE: &str = "snapshot";

/// Why the metadata store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O error, corrupted database files, ...).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A value could not be encoded or decoded.
    #[error("encoding: {0}")]
    Codec(#[from] bincode::Error),
    /// Data read from disk is not what the store wrote.
    #[error("corrupt metadata store: {0}")]
    Corrupt(String),
}

/// Opens (creating it if needed) the metadata store in the directory `path` and returns its two
/// halves, which share the database. Loads the persisted snapshot, if any, into the state
/// machine.
pub fn open_store(path: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let db = sled::Config::new().path(path).open()?;
    let logs = db.open_tree(LOGS_TREE)?;
    let meta = db.open_tree(META_TREE)?;
    let snapshot = db.open_tree(SNAPSHOT_TREE)?;
    let log_store = LogStore::new(db.clone(), logs, meta);
    let state_machine = StateMachineStore::open(db, snapshot)?;
    Ok((log_store, state_machine))
}

/// Turns any error into the openraft storage error built by `ctor` (one of the
/// `StorageIOError::read_logs`, `write_vote`, ... constructors).
// openraft's trait methods return its (large) error type by value: nothing to box here.
#[allow(clippy::result_large_err)]
trait OrStorage<T> {
    fn or_storage(
        self,
        ctor: impl FnOnce(AnyError) -> StorageIOError<NodeId>,
    ) -> Result<T, StorageError>;
}

impl<T, E: std::error::Error + 'static> OrStorage<T> for Result<T, E> {
    fn or_storage(
        self,
        ctor: impl FnOnce(AnyError) -> StorageIOError<NodeId>,
    ) -> Result<T, StorageError> {
        self.map_err(|e| ctor(AnyError::new(&e)).into())
    }
}
