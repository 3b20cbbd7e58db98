//! The Raft log and vote, in the `logs` and `meta` sled trees.

use std::fmt::{self, Debug};
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{OrStorage, StoreError};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// `meta` key of the vote.
const VOTE_KEY: &[u8] = b"vote";
/// `meta` key of the committed log id.
const COMMITTED_KEY: &[u8] = b"committed";
/// `meta` key of the last purged log id.
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The Raft log of the metadata quorum, with the vote and the committed log id: openraft's
/// [`RaftLogStorage`] (and its own [`RaftLogReader`]). Clones share the database.
///
/// Writes are durable when they return (or, for `append`, when the callback is called): each
/// one ends with a flush of the database.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("entries", &self.logs.len())
            .finish_non_exhaustive()
    }
}

/// The `logs` key of log index `index`: big-endian so keys sort like indexes.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index a `logs` key names.
fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Decodes the entry stored under `key`, checking it is the entry of that index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
    let index = key_index(key)?;
    let entry: Entry = bincode::deserialize(value)?;
    if entry.log_id.index != index {
        return Err(StoreError::Corrupt(format!(
            "log key {index} holds the entry of index {}",
            entry.log_id.index
        )));
    }
    Ok(entry)
}

impl LogStore {
    pub(super) fn new(db: sled::Db, logs: sled::Tree, meta: sled::Tree) -> Self {
        LogStore { db, logs, meta }
    }

    /// Reads and decodes `meta` key `key`.
    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(bincode::deserialize(&bytes)?)),
        }
    }

    /// Encodes and writes `meta` key `key` (not flushed).
    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StoreError> {
        self.meta.insert(key, bincode::serialize(value)?)?;
        Ok(())
    }

    /// Flushes and fsyncs every write made so far (to any tree of the database).
    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// The log id of the last entry in the log, if any.
    fn last_entry_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.logs.last()? {
            None => Ok(None),
            Some((key, value)) => Ok(Some(decode_entry(&key, &value)?.log_id)),
        }
    }

    /// The entries present in `range`, in index order.
    fn read_entries<RB: RangeBounds<u64>>(&self, range: &RB) -> Result<Vec<Entry>, StoreError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.logs.range(index_key(start)..) {
            let (key, value) = item?;
            if !range.contains(&key_index(&key)?) {
                break;
            }
            entries.push(decode_entry(&key, &value)?);
        }
        Ok(entries)
    }

    /// Removes the entries whose index is in `range` (not flushed).
    fn remove_entries<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in self.logs.range(range) {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.logs.apply_batch(batch)?;
        Ok(())
    }

    /// Writes `entries` in one batch (not flushed).
    fn write_entries<I: IntoIterator<Item = Entry>>(&self, entries: I) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(
                &index_key(entry.log_id.index)[..],
                bincode::serialize(&entry)?,
            );
        }
        self.logs.apply_batch(batch)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// The entries present in `range` (missing ones are skipped), in index order.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(&range)
            .or_storage(StorageIOError::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    /// The last purged log id and the last log id (the last entry's, or the last purged one
    /// when the log is empty).
    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self
            .get_meta(LAST_PURGED_KEY)
            .or_storage(StorageIOError::read_logs)?;
        let last_entry = self
            .last_entry_log_id()
            .or_storage(StorageIOError::read_logs)?;
        let last_log_id = match (last_entry, last_purged_log_id) {
            (Some(last), Some(purged)) => Some(std::cmp::max(last, purged)),
            (last, purged) => last.or(purged),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Saves the vote. Durable (flushed) when this returns.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE_KEY, vote)
            .or_storage(StorageIOError::write_vote)?;
        self.flush().await.or_storage(StorageIOError::write_vote)
    }

    /// The last vote saved by [`Self::save_vote`].
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE_KEY)
            .or_storage(StorageIOError::read_vote)
    }

    /// Saves the committed log id, so that openraft re-applies the committed entries after the
    /// last snapshot on restart (the state machine keeps its state in memory only). Durable
    /// (flushed) when this returns.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        match committed {
            Some(log_id) => self
                .put_meta(COMMITTED_KEY, &log_id)
                .or_storage(StorageIOError::write_logs)?,
            None => {
                self.meta
                    .remove(COMMITTED_KEY)
                    .or_storage(StorageIOError::write_logs)?;
            }
        }
        self.flush().await.or_storage(StorageIOError::write_logs)
    }

    /// The committed log id last saved by [`Self::save_committed`].
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.get_meta(COMMITTED_KEY)
            .or_storage(StorageIOError::read_logs)
    }

    /// Writes `entries` in one batch (readable when this returns), flushes the database and
    /// only then reports them durable through `callback`.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.write_entries(entries)
            .or_storage(StorageIOError::write_logs)?;
        match self.db.flush_async().await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    /// Removes the entries from `log_id.index` on. Durable (flushed) when this returns.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the metadata log");
        self.remove_entries(index_key(log_id.index)..)
            .or_storage(StorageIOError::write_logs)?;
        self.flush().await.or_storage(StorageIOError::write_logs)
    }

    /// Records `log_id` as the last purged log id, then removes the entries up to
    /// `log_id.index` included. Durable (flushed) when this returns.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the metadata log");
        self.put_meta(LAST_PURGED_KEY, &log_id)
            .or_storage(StorageIOError::write_logs)?;
        self.remove_entries(..=index_key(log_id.index))
            .or_storage(StorageIOError::write_logs)?;
        self.flush().await.or_storage(StorageIOError::write_logs)
    }
}
