//! The sled-backed openraft storage: openraft's storage test suite, durability across reopening,
//! snapshots, and applying metadata commands.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageHelper, StorageIOError,
};
use tempfile::TempDir;
use weir_meta::store::{open_store, LogStore, StateMachineStore};
use weir_meta::types::{Entry, LogId, StorageError, Vote};
use weir_meta::{Command, MetadataState, NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
        let (log_store, state_machine) =
            open_store(dir.path()).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

/// Opens the store at `path` again once the previous instance is dropped. sled releases its
/// directory lock when its last internal handle goes, which background threads (finishing a
/// flush) may hold for a moment after the store is dropped: retry for a while.
async fn reopen(path: &Path) -> (LogStore, StateMachineStore) {
    let mut attempts = 0;
    loop {
        match open_store(path) {
            Ok(store) => return store,
            Err(e) if attempts < 100 => {
                attempts += 1;
                eprintln!("reopening {}: {e}", path.display());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening {}: {e}", path.display()),
        }
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn blank(term: u64, index: u64) -> Entry {
    entry(term, index, EntryPayload::Blank)
}

fn normal(term: u64, index: u64, command: Command) -> Entry {
    entry(term, index, EntryPayload::Normal(command))
}

fn membership(term: u64, index: u64, voters: &[NodeId]) -> Entry {
    let nodes: BTreeMap<NodeId, BasicNode> = voters
        .iter()
        .map(|id| (*id, BasicNode::new(format!("127.0.0.1:{}", 9800 + id))))
        .collect();
    let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
    entry(
        term,
        index,
        EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    )
}

fn register(id: NodeId) -> Command {
    Command::RegisterBroker {
        id,
        address: format!("127.0.0.1:{}", 9700 + id),
        rack: None,
        incarnation: 7,
    }
}

/// Entries 0..=7: blank, membership {1,2,3} at 1, then brokers 1..=3 registered and unfenced.
fn cluster_entries() -> Vec<Entry> {
    let mut entries = vec![blank(0, 0), membership(1, 1, &[1, 2, 3])];
    let mut index = 1;
    for id in 1..=3 {
        index += 1;
        entries.push(normal(1, index, register(id)));
        index += 1;
        entries.push(normal(1, index, Command::UnfenceBroker { id }));
    }
    entries
}

/// The `CreateTopic` command for `name`, placed on the brokers `state` knows.
fn create_topic(state: &MetadataState, name: &str, partitions: u32) -> Command {
    Command::CreateTopic {
        name: name.into(),
        topic_id: "ab".repeat(16),
        assignment: state.place_replicas(partitions, 3).unwrap(),
        configs: BTreeMap::new(),
    }
}

/// A state machine that applied the cluster entries and created topic `orders` (3 partitions)
/// at index 8.
async fn with_topic(sm: &mut StateMachineStore) {
    sm.apply(cluster_entries()).await.unwrap();
    let create = create_topic(&sm.current(), "orders", 3);
    let results = sm.apply([normal(1, 8, create)]).await.unwrap();
    assert_eq!(results[0].error, None);
}

#[tokio::test]
async fn applied_create_topic_shows_in_current() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open_store(dir.path()).unwrap();
    let mut rx = sm.subscribe();

    let results = sm.apply(cluster_entries()).await.unwrap();
    assert_eq!(results.len(), 8);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.error, None);
        assert_eq!(result.version, i as u64);
    }
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().brokers.len(), 3);

    let create = create_topic(&sm.current(), "orders", 3);
    let results = sm
        .apply([
            normal(1, 8, create.clone()),
            blank(2, 9),
            normal(2, 10, create),
        ])
        .await
        .unwrap();
    assert_eq!(results[0].error, None);
    assert_eq!(results[0].version, 8);
    assert_eq!(results[1].error, None);
    assert_eq!(results[1].version, 9);
    assert!(
        matches!(results[2].error, Some(weir_meta::MetaError::TopicExists(_))),
        "{results:?}"
    );
    assert_eq!(results[2].version, 10);

    let current = sm.current();
    let topic = &current.topics["orders"];
    assert_eq!(topic.partitions.len(), 3);
    for partition in &topic.partitions {
        assert_eq!(partition.replicas.len(), 3);
        assert!(partition.leader.is_some());
    }
    assert_eq!(current.version, 10);
    assert_eq!(sm.last_applied(), Some(log_id(2, 10)));
    assert!(rx.has_changed().unwrap());
    assert_eq!(**rx.borrow_and_update(), *current);

    let (last_applied, last_membership) = sm.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(2, 10)));
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 1)));
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = cluster_entries();
    {
        let (mut log, _sm) = open_store(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        log.blocking_append(cluster_entries()).await.unwrap();
        log.blocking_append([blank(2, 8), blank(2, 9)])
            .await
            .unwrap();
        log.truncate(log_id(2, 9)).await.unwrap();
        log.save_committed(Some(log_id(1, 4))).await.unwrap();
    }
    expected.push(blank(2, 8));

    {
        let (mut log, mut sm) = reopen(dir.path()).await;
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 4)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(state.last_log_id, Some(log_id(2, 8)));
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), expected);
        assert_eq!(
            log.try_get_log_entries(3..=4).await.unwrap(),
            expected[3..5]
        );

        // No snapshot: openraft rebuilds the state machine from the committed entries.
        assert_eq!(sm.last_applied(), None);
        assert_eq!(*sm.current(), MetadataState::default());
        let initial = StorageHelper::new(&mut log, &mut sm)
            .get_initial_state()
            .await
            .unwrap();
        assert_eq!(initial.committed, Some(log_id(1, 4)));
        assert_eq!(sm.last_applied(), Some(log_id(1, 4)));
        let current = sm.current();
        assert_eq!(current.version, 4);
        assert_eq!(current.brokers.len(), 2);
        assert!(!current.brokers[&1].fenced);
        assert!(current.brokers[&2].fenced);

        log.purge(log_id(1, 2)).await.unwrap();
    }

    let (mut log, _sm) = reopen(dir.path()).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), expected[3..]);
}

#[tokio::test]
async fn built_snapshot_survives_reopen_and_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (built_meta, state) = {
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        with_topic(&mut sm).await;
        let mut builder = sm.get_snapshot_builder().await;
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 8)));
        assert_eq!(snapshot.meta.last_membership.log_id(), &Some(log_id(1, 1)));
        assert!(
            snapshot.meta.snapshot_id.starts_with("1-8-"),
            "{}",
            snapshot.meta.snapshot_id
        );
        (snapshot.meta, sm.current())
    };

    let (_log, mut sm) = reopen(dir.path()).await;
    assert_eq!(*sm.current(), *state);
    assert!(sm.current().topics.contains_key("orders"));
    assert_eq!(sm.last_applied(), Some(log_id(1, 8)));
    let (last_applied, last_membership) = sm.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 8)));
    assert_eq!(last_membership, built_meta.last_membership);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built_meta);
}

#[tokio::test]
async fn installed_snapshot_replaces_state_and_is_published() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader) = open_store(leader_dir.path()).unwrap();
    with_topic(&mut leader).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm) = open_store(dir.path()).unwrap();
        // Something the snapshot must replace.
        sm.apply([membership(1, 1, &[1]), normal(1, 2, register(9))])
            .await
            .unwrap();
        let mut rx = sm.subscribe();
        rx.borrow_and_update();

        // Malformed bytes are refused and change nothing.
        let mut garbage = sm.begin_receiving_snapshot().await.unwrap();
        *garbage = Cursor::new(vec![0xff; 5]);
        assert!(sm.install_snapshot(&snapshot.meta, garbage).await.is_err());
        assert!(!rx.has_changed().unwrap());
        assert_eq!(sm.last_applied(), Some(log_id(1, 2)));
        assert!(sm.get_current_snapshot().await.unwrap().is_none());

        let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
        *receiving = *snapshot.snapshot;
        sm.install_snapshot(&snapshot.meta, receiving)
            .await
            .unwrap();

        assert!(rx.has_changed().unwrap());
        let published = rx.borrow_and_update().clone();
        assert_eq!(published, leader.current());
        assert!(!published.brokers.contains_key(&9));
        assert!(published.topics.contains_key("orders"));
        assert_eq!(sm.current(), leader.current());
        assert_eq!(
            sm.applied_state().await.unwrap(),
            (Some(log_id(1, 8)), snapshot.meta.last_membership.clone())
        );
        assert_eq!(
            sm.get_current_snapshot().await.unwrap().unwrap().meta,
            snapshot.meta
        );
    }

    // The installed snapshot is what a restart loads.
    let (_log, sm) = reopen(dir.path()).await;
    assert_eq!(sm.current(), leader.current());
    assert_eq!(sm.last_applied(), Some(log_id(1, 8)));
    let arc: Arc<MetadataState> = sm.current();
    assert!(arc.topics.contains_key("orders"));
}
