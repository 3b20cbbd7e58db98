//! The state machine: the applied [`MetadataState`] in memory, published on a watch channel,
//! and its snapshots, persisted in the `snapshot` sled tree.
//!
//! `apply` changes only memory; the state is made durable by snapshots plus the committed
//! entries the log keeps after them (see the [module documentation](super)).

use std::fmt::{self, Debug};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use weir_common::sync::MutexExt;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{OrStorage, StoreError};
use crate::command::CommandResult;
use crate::state::MetadataState;
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// `snapshot` key of the current snapshot.
const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";

/// What the `snapshot` tree stores: the snapshot's metadata and its bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The bytes of a snapshot (what followers receive), encoding side.
#[derive(Serialize)]
struct SnapshotDataRef<'a> {
    state: &'a MetadataState,
    last_applied: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    /// [`MetadataState::next_producer_id`], last so that the layout before it is unchanged.
    next_producer_id: i64,
}

/// The bytes of a snapshot, decoding side.
#[derive(Deserialize)]
struct SnapshotData {
    state: MetadataState,
    #[allow(dead_code)]
    last_applied: Option<LogId>,
    #[allow(dead_code)]
    last_membership: StoredMembership,
    next_producer_id: i64,
}

/// A snapshot written before producer ids existed: [`SnapshotData`] without its last field.
#[derive(Deserialize)]
struct SnapshotDataV0 {
    state: MetadataState,
    #[allow(dead_code)]
    last_applied: Option<LogId>,
    #[allow(dead_code)]
    last_membership: StoredMembership,
}

/// The state a snapshot's bytes hold, in the current layout or the one before producer ids
/// (which then start at 0: none were handed out).
fn decode_snapshot(bytes: &[u8]) -> Result<MetadataState, bincode::Error> {
    use bincode::Options;
    match bincode::deserialize::<SnapshotData>(bytes) {
        Ok(data) => Ok(MetadataState {
            next_producer_id: data.next_producer_id,
            ..data.state
        }),
        // The old layout exactly, with nothing after it: a new-layout snapshot cut short must
        // fail, not pass for an old one whose producer ids start again at 0.
        Err(e) => match bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .reject_trailing_bytes()
            .deserialize::<SnapshotDataV0>(bytes)
        {
            Ok(old) => Ok(old.state),
            Err(_) => Err(e),
        },
    }
}

/// Which log entries the in-memory state reflects.
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

struct Shared {
    db: sled::Db,
    snapshots: sled::Tree,
    /// Held while applying and while reading a consistent (state, last applied) pair; always
    /// taken before the watch channel's lock. Never held across an `.await`.
    applied: Mutex<Applied>,
    /// Owns the current state: `apply` mutates it in place (cloning it only if a reader still
    /// holds the previous `Arc`) and publishes it in one step.
    state_tx: watch::Sender<Arc<MetadataState>>,
    /// Makes snapshot ids unique among the snapshots built by this process.
    snapshot_counter: AtomicU64,
    /// Serializes the check-and-replace of the persisted snapshot.
    snapshot_write: Mutex<()>,
}

/// The metadata state machine: openraft's [`RaftStateMachine`] (and its own
/// [`RaftSnapshotBuilder`]). Clones share the state and the database.
///
/// Every applied batch of log entries is published on a watch channel ([`Self::subscribe`]):
/// this is how brokers learn every metadata change, in log order.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl Debug for StateMachineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must not deadlock if this thread is applying.
        let last_applied = self.shared.applied.try_lock().ok().map(|a| a.last_applied);
        f.debug_struct("StateMachineStore")
            .field("last_applied", &last_applied)
            .field("version", &self.current().version)
            .finish_non_exhaustive()
    }
}

impl StateMachineStore {
    /// Opens the state machine on the `snapshot` tree, loading the persisted snapshot if any.
    pub(super) fn open(db: sled::Db, snapshots: sled::Tree) -> Result<Self, StoreError> {
        let (state, applied) = match read_stored_snapshot(&snapshots)? {
            None => (
                MetadataState::default(),
                Applied {
                    last_applied: None,
                    last_membership: StoredMembership::default(),
                },
            ),
            Some(stored) => {
                let state = decode_snapshot(&stored.data)?;
                tracing::info!(
                    snapshot_id = %stored.meta.snapshot_id,
                    version = state.version,
                    "loaded the metadata snapshot"
                );
                (
                    state,
                    Applied {
                        last_applied: stored.meta.last_log_id,
                        last_membership: stored.meta.last_membership,
                    },
                )
            }
        };
        let (state_tx, _) = watch::channel(Arc::new(state));
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                db,
                snapshots,
                applied: Mutex::new(applied),
                state_tx,
                snapshot_counter: AtomicU64::new(0),
                snapshot_write: Mutex::new(()),
            }),
        })
    }

    /// A receiver of the metadata state, which sees a new value after each applied batch of
    /// log entries and each installed snapshot. Clone the `Arc` out of `borrow()` rather than
    /// holding the guard: a held guard blocks the next publication.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataState>> {
        self.shared.state_tx.subscribe()
    }

    /// The current metadata state.
    pub fn current(&self) -> Arc<MetadataState> {
        self.shared.state_tx.borrow().clone()
    }

    /// The id of the last applied log entry.
    pub fn last_applied(&self) -> Option<LogId> {
        self.lock_applied().last_applied
    }

    fn lock_applied(&self) -> MutexGuard<'_, Applied> {
        // `Applied` is only assigned whole fields, so it is consistent even after a panic.
        self.shared.applied.locked()
    }

    /// Persists `stored` as the current snapshot unless (when `only_if_newer`) the persisted
    /// one covers more of the log, then flushes. Returns whether it was written.
    async fn persist_snapshot(
        &self,
        stored: &StoredSnapshot,
        only_if_newer: bool,
    ) -> Result<bool, StoreError> {
        let bytes = bincode::serialize(stored)?;
        {
            let _guard = self.shared.snapshot_write.locked();
            if only_if_newer {
                if let Some(current) = read_stored_snapshot(&self.shared.snapshots)? {
                    if current.meta.last_log_id > stored.meta.last_log_id {
                        return Ok(false);
                    }
                }
            }
            self.shared.snapshots.insert(CURRENT_SNAPSHOT_KEY, bytes)?;
        }
        self.shared.db.flush_async().await?;
        Ok(true)
    }
}

/// Reads and decodes the persisted snapshot.
fn read_stored_snapshot(snapshots: &sled::Tree) -> Result<Option<StoredSnapshot>, StoreError> {
    match snapshots.get(CURRENT_SNAPSHOT_KEY)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(bincode::deserialize(&bytes)?)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Serializes the current state, persists it as the current snapshot (flushed; unless a
    /// newer snapshot was installed meanwhile) and returns it.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (state, last_applied, last_membership) = {
            let applied = self.lock_applied();
            (
                self.current(),
                applied.last_applied,
                applied.last_membership.clone(),
            )
        };
        let data = bincode::serialize(&SnapshotDataRef {
            state: &state,
            last_applied: &last_applied,
            last_membership: &last_membership,
            next_producer_id: state.next_producer_id,
        })
        .or_storage(StorageIOError::read_state_machine)?;
        drop(state);

        let counter = self.shared.snapshot_counter.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, counter),
            None => format!("--{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        let written = self
            .persist_snapshot(&stored, true)
            .await
            .or_storage(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), e))?;
        tracing::info!(snapshot_id = %stored.meta.snapshot_id, written, "built a metadata snapshot");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.lock_applied();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    /// Applies `entries` in memory (nothing is written to disk) and publishes the new state
    /// once the whole batch is applied. Answers one [`CommandResult`] per entry.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut applied = self.lock_applied();
        self.shared.state_tx.send_if_modified(|state| {
            for entry in entries {
                let index = entry.log_id.index;
                applied.last_applied = Some(entry.log_id);
                let state = Arc::make_mut(state);
                let ids_before = state.next_producer_id;
                let error = match entry.payload {
                    EntryPayload::Blank => {
                        state.version = index;
                        None
                    }
                    EntryPayload::Normal(command) => state.apply(index, &command).err(),
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        state.version = index;
                        None
                    }
                };
                results.push(CommandResult {
                    error,
                    version: index,
                    first_producer_id: (state.next_producer_id != ids_before).then_some(ids_before),
                });
            }
            !results.is_empty()
        });
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Decodes the snapshot, persists it as the current one (flushed), then replaces the
    /// in-memory state with it and publishes it. Malformed bytes are an error and change
    /// nothing.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let decoded = decode_snapshot(&data)
            .or_storage(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.persist_snapshot(&stored, false)
            .await
            .or_storage(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;

        let mut applied = self.lock_applied();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        self.shared.state_tx.send_replace(Arc::new(decoded));
        drop(applied);
        tracing::info!(snapshot_id = %meta.snapshot_id, "installed a metadata snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = read_stored_snapshot(&self.shared.snapshots)
            .or_storage(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_carry_the_next_producer_id_and_older_ones_still_load() {
        let state = MetadataState {
            version: 12,
            next_producer_id: 3000,
            ..MetadataState::default()
        };
        let membership = StoredMembership::default();
        let bytes = bincode::serialize(&SnapshotDataRef {
            state: &state,
            last_applied: &None,
            last_membership: &membership,
            next_producer_id: state.next_producer_id,
        })
        .unwrap();
        assert_eq!(decode_snapshot(&bytes).unwrap(), state);

        #[derive(Serialize)]
        struct Before<'a> {
            state: &'a MetadataState,
            last_applied: &'a Option<LogId>,
            last_membership: &'a StoredMembership,
        }
        let old = bincode::serialize(&Before {
            state: &state,
            last_applied: &None,
            last_membership: &membership,
        })
        .unwrap();
        let loaded = decode_snapshot(&old).unwrap();
        assert_eq!((loaded.version, loaded.next_producer_id), (12, 0));
        assert!(decode_snapshot(&old[..old.len() - 1]).is_err());
        // (Cut by exactly 8 bytes it is byte for byte an old snapshot of the same state.)
        for cut in 1..8 {
            assert!(
                decode_snapshot(&bytes[..bytes.len() - cut]).is_err(),
                "a new snapshot cut by {cut} bytes must not load as an old one"
            );
        }
    }
}
