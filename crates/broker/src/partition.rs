//! One partition replica on this broker: its log, whether it leads or follows, and — when it
//! leads — each follower's progress, the ISR and the high watermark.
//!
//! The high watermark (HW) is the smallest log end offset (LEO) among the *maximal* ISR — the
//! committed ISR plus any member an in-flight AlterPartition would add (KIP-497), since the
//! controller may elect such a member as soon as it commits the change — never moving
//! backwards; a follower in it whose LEO is not known yet (no fetch since this broker became
//! leader) holds it where it is. Consumers read below the HW only; acks=all completes once the
//! HW passes the batch.
//!
//! Replication rules kept here (DESIGN.md, "Replication rules"):
//! - [`Partition::make_leader`] records `(epoch, log end offset)` in the leader-epoch cache
//!   before the replica leads, so OffsetForLeaderEpoch always knows the current epoch.
//! - A follower's position counts only once it is within the leader's log, and it joins the ISR
//!   only at or past both the HW and the first offset of the leader's current epoch
//!   (KAFKA-7128): a replica that has not yet fetched anything of this epoch may still hold a
//!   divergent tail.
//! - Follower-side changes to the log (append, truncate, reset) name the leader and epoch they
//!   were computed for, and are refused unless the replica still follows that leader in that
//!   epoch, checked under the partition's lock at the moment of the change.
//!
//! Everything that waits on the partition (consumer fetch streams, replica fetch sessions,
//! acks=all producers) watches one [`View`], published after every change, so nothing polls.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use weir_common::sync::{MutexExt, RwLockExt};

use bytes::Bytes;
use tokio::sync::watch;
use weir_meta::NodeId;
use weir_storage::{AppendInfo, LogConfig, PartitionLog};

use crate::error::BrokerError;

/// What waiters need to know, published on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Log end offset.
    pub log_end: i64,
    /// High watermark (leader's view; on a follower, the last HW the leader sent).
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start: i64,
    /// Leader epoch this replica is in.
    pub leader_epoch: i32,
    /// Whether this replica leads.
    pub leading: bool,
}

/// A follower's progress as the leader sees it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Its LEO from its last fetch; `None` until it fetches in this leader epoch.
    log_end: Option<i64>,
    /// Last time it had everything the leader had (at the previous answer).
    caught_up_at: Instant,
    /// The leader's LEO when it last answered this follower: a follower whose next fetch
    /// asks for at least this had everything the leader had then (Kafka's
    /// `lastFetchLeaderLogEndOffset`), which is what moves `caught_up_at`.
    answered_leo: i64,
    /// When that answer was sent.
    answered_at: Instant,
}

/// What a replica knows while it leads: the partition's assignment and ISR as the controller
/// last told it, and each follower's progress, from which it moves the high watermark and asks
/// for ISR changes.
#[derive(Debug)]
struct Leading {
    /// The leader epoch it leads in; requests in another epoch are fenced.
    epoch: i32,
    /// The partition epoch of the state it leads from (Kafka's partition epoch): an ISR change
    /// it sends names it, and the controller refuses a change computed from an older one.
    partition_epoch: i32,
    /// Every replica of the partition, preferred leader first (this broker among them).
    replicas: Vec<NodeId>,
    /// The committed ISR, as the controller last told this leader.
    isr: Vec<NodeId>,
    /// The log end offset when this replica became leader: the first offset of its epoch.
    epoch_start: i64,
    /// Each follower's progress (every replica but this one), reset when the epoch changes.
    followers: HashMap<NodeId, Progress>,
    /// The ISR an AlterPartition on its way to the controller asks for; while it is in flight
    /// no other change is sent, and the HW counts its members too (the maximal ISR).
    pending_isr: Option<Vec<NodeId>>,
}

impl Leading {
    /// The committed ISR plus the members a pending change would add (KIP-497).
    fn maximal_isr(&self) -> impl Iterator<Item = NodeId> + '_ {
        let added = self
            .pending_isr
            .iter()
            .flatten()
            .filter(|r| !self.isr.contains(r));
        self.isr.iter().chain(added).copied()
    }
}

/// Whether this replica leads or follows, and in which epoch: what every produce, fetch and
/// replica-fetch checks first.
#[derive(Debug)]
enum Role {
    /// Leading, with what leading needs.
    Leader(Leading),
    /// Following `leader` (`None`: the partition has no leader now) in leader epoch `epoch`.
    Follower {
        /// The leader it fetches from.
        leader: Option<NodeId>,
        /// The leader epoch it follows in.
        epoch: i32,
    },
}

/// The replica's replication state, under one mutex (lock order: role, state, log).
#[derive(Debug)]
struct State {
    /// Leading or following.
    role: Role,
    /// Records below it are committed: on the leader, the least log end offset over the
    /// (maximal) ISR; on a follower, the last high watermark the leader sent, never more than
    /// its own log end.
    high_watermark: i64,
    /// The topic's `min.insync.replicas`: acks=all needs at least this many in the ISR.
    min_insync: usize,
    /// The log's `compression.type` settings, mirrored here (as `min_insync` is) so a
    /// produce recompresses without taking the log's lock.
    recompression: weir_storage::Recompression,
}

/// A requested ISR change for the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// Leader epoch of the leader asking.
    pub leader_epoch: i32,
    /// Partition epoch it last saw.
    pub partition_epoch: i32,
    /// The ISR it wants.
    pub isr: Vec<NodeId>,
    /// The members it adds, with the broker epoch each fetched with (KIP-903).
    pub added: Vec<(NodeId, u64)>,
}

/// One partition replica.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: u32,
    /// Id of the topic incarnation this log belongs to.
    pub topic_id: String,
    /// This broker's id: the replica's own entry in the replica and ISR lists.
    broker_id: NodeId,
    /// The partition log; appends take it for writing, reads for reading.
    log: RwLock<PartitionLog>,
    /// Held for reading across a leader append (role check to write), for writing by a role
    /// change: a replica never appends as leader once it has become a follower or moved to
    /// another epoch (Kafka's leaderIsrUpdateLock). Lock order: role, state, log.
    role: RwLock<()>,
    /// Role, high watermark and `min.insync.replicas`.
    state: Mutex<State>,
    /// The latest [`View`], published on every change: acks=all waiters, fetch streams and
    /// replica sessions wait on it instead of polling.
    view: watch::Sender<View>,
    /// The HW last written to [`HIGH_WATERMARK_FILE`], and when.
    checkpointed_hw: Mutex<(i64, Instant)>,
}

/// The high-watermark checkpoint in the partition directory (Kafka keeps one
/// `replication-offset-checkpoint` per log directory; one small file per partition is the same
/// promise): where a restarted replica's high watermark starts, instead of the log start.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";
/// How often upkeep writes a moved HW (Kafka's `replica.high.watermark.checkpoint.interval.ms`
/// default): at most one small fsync per partition per interval.
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// Appends slower than this are logged (a warning with where the time went).
const SLOW_APPEND: Duration = Duration::from_millis(50);

/// Reserves disk blocks ahead of the active segment when the log says it is time (see
/// `weir_storage::preallocate`: appends then don't wait on block allocation while the kernel
/// writes back), on a blocking thread of its own so the append that asked does not wait for
/// the file system. A failed reservation only means the appends allocate as usual.
fn reserve_ahead(log: &mut PartitionLog) {
    let reservation = match log.take_preallocation() {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "no segment preallocation");
            return;
        }
    };
    let run = move || {
        if let Err(e) = reservation.run() {
            tracing::debug!(error = %e, "segment preallocation failed");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(run)),
        Err(_) => run(),
    }
}

/// What a retired partition directory's name carries after the partition's own: the suffix,
/// then the time it was retired (ms since the epoch).
pub const RETIRED: &str = ".deleted-";

/// Where the log directory `dir` goes when it is retired at `now_ms`.
pub fn retired_path(dir: &std::path::Path, now_ms: i64) -> std::path::PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{RETIRED}{now_ms}"));
    dir.with_file_name(name)
}

/// A retired directory's name split into the partition directory's name and the time it was
/// retired; `None` for any other name.
pub fn split_retired(name: &str) -> Option<(&str, i64)> {
    let (stem, at) = name.rsplit_once(RETIRED)?;
    Some((stem, at.parse().ok()?))
}

impl Partition {
    /// Opens (and recovers) the log in `dir`; the replica starts as a follower with no leader.
    /// Blocking: call off the async workers.
    pub fn open(
        dir: &Path,
        topic: &str,
        index: u32,
        topic_id: &str,
        broker_id: NodeId,
        config: LogConfig,
    ) -> Result<Self, BrokerError> {
        let recompression = config.recompression();
        let log = PartitionLog::open(dir, config)?;
        // The checkpointed HW, within what recovery kept: a restarted leader does not start
        // from the log start (consumers would see nothing until every follower fetched).
        let high_watermark = weir_storage::checkpoint::read_i64(dir, HIGH_WATERMARK_FILE)
            .unwrap_or(0)
            .clamp(log.log_start_offset(), log.log_end_offset());
        let view = View {
            log_end: log.log_end_offset(),
            high_watermark,
            log_start: log.log_start_offset(),
            leader_epoch: -1,
            leading: false,
        };
        Ok(Self {
            topic: topic.to_owned(),
            index,
            topic_id: topic_id.to_owned(),
            broker_id,
            state: Mutex::new(State {
                role: Role::Follower {
                    leader: None,
                    epoch: -1,
                },
                high_watermark: view.high_watermark,
                min_insync: 1,
                recompression,
            }),
            checkpointed_hw: Mutex::new((high_watermark, Instant::now())),
            log: RwLock::new(log),
            role: RwLock::new(()),
            view: watch::channel(view).0,
        })
    }

    /// The current view.
    pub fn view(&self) -> View {
        *self.view.borrow()
    }

    /// Whether a fetch (a consumer's or a follower's) at `offset` can be served under `view`:
    /// this replica leads, and the offset is inside its log. Else NOT_LEADER_OR_FOLLOWER (no
    /// leader address: the caller knows more) or OFFSET_OUT_OF_RANGE; either ends the stream.
    pub fn check_fetch(&self, view: &View, offset: i64) -> Result<(), BrokerError> {
        if !view.leading {
            return Err(BrokerError::not_leader(&self.topic, self.index, None));
        }
        if offset < view.log_start || offset > view.log_end {
            return Err(BrokerError::OffsetOutOfRange {
                offset,
                log_start: view.log_start,
                log_end: view.log_end,
            });
        }
        Ok(())
    }

    /// Watches the view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Advances the HW (when leading) and publishes the view: one read of the log's offsets
    /// serves both, on the produce path too.
    fn publish(&self, state: &mut State) {
        let (leo, start) = {
            let log = self.log.read_locked();
            (log.log_end_offset(), log.log_start_offset())
        };
        self.advance_high_watermark(state, leo);
        let (leading, epoch) = match &state.role {
            Role::Leader(l) => (true, l.epoch),
            Role::Follower { epoch, .. } => (false, *epoch),
        };
        let view = View {
            log_end: leo,
            high_watermark: state.high_watermark,
            log_start: start,
            leader_epoch: epoch,
            leading,
        };
        self.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// Becomes (or stays) the leader in `epoch`. Followers get a fresh grace period for the
    /// ISR check; the HW starts where this replica last knew it and advances as they fetch.
    ///
    /// A new epoch is recorded in the leader-epoch cache at the log end offset first (durably);
    /// if that fails the replica does not lead. Taking the partition's lock here also waits for
    /// a follower-side change already under way, and every later one is refused. Blocking
    /// (it may write the epoch checkpoint): call off the async workers.
    pub fn make_leader(
        &self,
        epoch: i32,
        partition_epoch: i32,
        replicas: &[NodeId],
        isr: &[NodeId],
        min_insync: usize,
    ) -> Result<(), BrokerError> {
        let _role = self.role.write_locked();
        let mut state = self.state.locked();
        state.min_insync = min_insync.max(1);
        match &mut state.role {
            Role::Leader(l) if l.epoch == epoch => {
                if partition_epoch > l.partition_epoch {
                    l.partition_epoch = partition_epoch;
                    l.isr = isr.to_vec();
                    l.replicas = replicas.to_vec();
                }
            }
            _ => {
                let now = Instant::now();
                let leo = {
                    let mut log = self.log.write_locked();
                    log.begin_leader_epoch(epoch)?;
                    log.log_end_offset()
                };
                let followers = replicas
                    .iter()
                    .filter(|r| **r != self.broker_id)
                    .map(|r| {
                        (
                            *r,
                            Progress {
                                log_end: None,
                                caught_up_at: now,
                                answered_leo: leo,
                                answered_at: now,
                            },
                        )
                    })
                    .collect();
                tracing::info!(topic = %self.topic, partition = self.index, epoch, "becoming leader");
                state.role = Role::Leader(Leading {
                    epoch,
                    partition_epoch,
                    replicas: replicas.to_vec(),
                    isr: isr.to_vec(),
                    epoch_start: leo,
                    followers,
                    pending_isr: None,
                });
            }
        }
        self.publish(&mut state);
        Ok(())
    }

    /// Becomes (or stays) a follower of `leader` in `epoch`. Returns whether anything changed
    /// (then the fetcher must restart: truncate and fetch from the new leader).
    pub fn make_follower(&self, leader: Option<NodeId>, epoch: i32) -> bool {
        // Waits for a leader append already under way (a few ms at most).
        let _role = self.role.write_locked();
        let mut state = self.state.locked();
        let changed = !matches!(&state.role, Role::Follower { leader: l, epoch: e } if *l == leader && *e == epoch);
        if changed {
            tracing::info!(topic = %self.topic, partition = self.index, epoch, leader = ?leader, "becoming follower");
            state.role = Role::Follower { leader, epoch };
            self.publish(&mut state);
        }
        changed
    }

    /// The leader and epoch this replica follows, if it follows.
    pub fn following(&self) -> Option<(Option<NodeId>, i32)> {
        match &self.state.locked().role {
            Role::Follower { leader, epoch } => Some((*leader, *epoch)),
            Role::Leader(_) => None,
        }
    }

    /// The leader epoch, if this replica leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &self.state.locked().role {
            Role::Leader(l) => Some(l.epoch),
            Role::Follower { .. } => None,
        }
    }

    /// HW = min LEO over the maximal ISR (unknown follower LEOs hold it), never backwards;
    /// `leo` is this replica's log end offset.
    fn advance_high_watermark(&self, state: &mut State, leo: i64) {
        let Role::Leader(l) = &state.role else { return };
        let mut hw = leo;
        for r in l.maximal_isr() {
            if r == self.broker_id {
                continue;
            }
            let follower = l
                .followers
                .get(&r)
                .and_then(|p| p.log_end)
                .unwrap_or(state.high_watermark);
            hw = hw.min(follower);
        }
        if hw > state.high_watermark {
            state.high_watermark = hw;
        }
    }

    /// Appends a producer's batch as leader. With acks=all the ISR must hold at least
    /// `min.insync.replicas` members first (NOT_ENOUGH_REPLICAS otherwise; nothing appended).
    /// Blocking (file I/O): call off the async workers.
    pub fn append_as_leader(
        &self,
        batch: Bytes,
        acks_all: bool,
    ) -> Result<(AppendInfo, i32), BrokerError> {
        // The role checked here is the role the batch is written in.
        let _role = self.role.read_locked();
        let (epoch, recompression) = {
            let state = self.state.locked();
            let Role::Leader(l) = &state.role else {
                return Err(BrokerError::not_leader(&self.topic, self.index, None));
            };
            if acks_all && l.isr.len() < state.min_insync {
                return Err(BrokerError::NotEnoughReplicas {
                    topic: self.topic.clone(),
                    partition: self.index,
                    isr: l.isr.len(),
                    min_insync: state.min_insync,
                });
            }
            (l.epoch, state.recompression)
        };
        // Recompression (compression.type) is pure work: done before the log's lock is taken.
        let batch = weir_storage::log::recompressed(&recompression, batch)?;
        let info = self.append_with(|log| log.append_as_leader(batch, epoch))?;
        let mut state = self.state.locked();
        self.publish(&mut state);
        Ok((info, epoch))
    }

    /// Runs one append (the leader's or a follower's) on the log, then hands out the next
    /// block reservation if one is due, and warns about an append slower than [`SLOW_APPEND`]
    /// (waiting for the log, then writing), so a latency spike can be told apart from the
    /// network or the client.
    fn append_with<T>(
        &self,
        append: impl FnOnce(&mut PartitionLog) -> weir_storage::Result<T>,
    ) -> Result<T, BrokerError> {
        let asked = Instant::now();
        let mut log = self.log.write_locked();
        let waited_for_log = asked.elapsed();
        let appended = append(&mut log)?;
        reserve_ahead(&mut log);
        drop(log);
        let total = asked.elapsed();
        if total >= SLOW_APPEND {
            tracing::warn!(
                topic = %self.topic,
                partition = self.index,
                waited_for_log_ms = waited_for_log.as_millis() as u64,
                total_ms = total.as_millis() as u64,
                "slow append"
            );
        }
        Ok(appended)
    }

    /// Waits until the HW passes `last_offset` (acks=all). Fails if leadership is lost or the
    /// ISR shrank below `min.insync.replicas` meanwhile, or on `timeout`.
    pub async fn wait_committed(
        &self,
        last_offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = *rx.borrow_and_update();
            if !view.leading || view.leader_epoch != epoch {
                return Err(BrokerError::not_leader(&self.topic, self.index, None));
            }
            if view.high_watermark > last_offset {
                let state = self.state.locked();
                if let Role::Leader(l) = &state.role {
                    if l.isr.len() < state.min_insync {
                        return Err(BrokerError::NotEnoughReplicasAfterAppend);
                    }
                }
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(BrokerError::not_leader(&self.topic, self.index, None)),
                Err(_) => {
                    return Err(BrokerError::ReplicationTimedOut {
                        timeout_ms: timeout.as_millis(),
                    })
                }
            }
        }
    }

    /// A follower reports its LEO (`fetch_offset`) in `epoch`. Updates its progress and the
    /// HW; returns an ISR expansion to request when it has caught up and is not in the ISR.
    ///
    /// A position outside this leader's log (`[log start, log end]`) is refused with
    /// OFFSET_OUT_OF_RANGE and recorded nowhere: a replica cannot claim records the leader
    /// does not have, so a claim can never advance the HW past what was replicated.
    pub fn record_follower_fetch(
        &self,
        replica: NodeId,
        epoch: i32,
        fetch_offset: i64,
        replica_epoch: u64,
    ) -> Result<Option<IsrChange>, BrokerError> {
        let mut state = self.state.locked();
        let hw = state.high_watermark;
        let Role::Leader(l) = &mut state.role else {
            return Err(BrokerError::not_leader(&self.topic, self.index, None));
        };
        if epoch != l.epoch {
            return Err(BrokerError::LeaderEpoch {
                asked: epoch,
                current: l.epoch,
            });
        }
        let Some(progress) = l.followers.get_mut(&replica) else {
            return Err(BrokerError::NotAReplica(replica));
        };
        let (leo, log_start) = {
            let log = self.log.read_locked();
            (log.log_end_offset(), log.log_start_offset())
        };
        if fetch_offset < log_start || fetch_offset > leo {
            return Err(BrokerError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start,
                log_end: leo,
            });
        }
        if fetch_offset >= leo {
            progress.caught_up_at = Instant::now();
        } else if fetch_offset >= progress.answered_leo {
            progress.caught_up_at = progress.answered_at;
        }
        progress.log_end = Some(fetch_offset);
        // Caught up to the HW *and* into this epoch: below the epoch's start the follower may
        // still hold records of an older epoch that this leader does not have (KAFKA-7128).
        let expand = !l.isr.contains(&replica)
            && fetch_offset >= hw
            && fetch_offset >= l.epoch_start
            && l.pending_isr.is_none();
        let change = expand.then(|| {
            let mut isr = l.isr.clone();
            isr.push(replica);
            isr.sort_unstable();
            l.pending_isr = Some(isr.clone());
            IsrChange {
                leader_epoch: l.epoch,
                partition_epoch: l.partition_epoch,
                isr,
                added: vec![(replica, replica_epoch)],
            }
        });
        self.publish(&mut state);
        Ok(change)
    }

    /// Notes that the leader answered `replica` while its LEO was `leo`.
    pub fn record_answer(&self, replica: NodeId, leo: i64) {
        if let Role::Leader(l) = &mut self.state.locked().role {
            if let Some(p) = l.followers.get_mut(&replica) {
                p.answered_leo = leo;
                p.answered_at = Instant::now();
            }
        }
    }

    /// ISR members that have not caught up for `max_lag`: the shrink to request, if any.
    pub fn isr_shrink(&self, max_lag: Duration) -> Option<IsrChange> {
        let mut state = self.state.locked();
        let Role::Leader(l) = &mut state.role else {
            return None;
        };
        if l.pending_isr.is_some() {
            return None;
        }
        let now = Instant::now();
        let lagging: Vec<NodeId> = l
            .isr
            .iter()
            .filter(|r| **r != self.broker_id)
            .filter(|r| {
                l.followers
                    .get(r)
                    .is_some_and(|p| now.duration_since(p.caught_up_at) > max_lag)
            })
            .copied()
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<NodeId> = l
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        l.pending_isr = Some(isr.clone());
        Some(IsrChange {
            leader_epoch: l.epoch,
            partition_epoch: l.partition_epoch,
            isr,
            added: Vec::new(),
        })
    }

    /// The controller answered an ISR change: adopt its partition state (when it is for this
    /// leader epoch) and clear the in-flight flag.
    pub fn isr_change_done(&self, result: Option<(i32, i32, Vec<NodeId>)>) {
        let mut state = self.state.locked();
        if let Role::Leader(l) = &mut state.role {
            l.pending_isr = None;
            if let Some((leader_epoch, partition_epoch, isr)) = result {
                if leader_epoch == l.epoch && partition_epoch >= l.partition_epoch {
                    l.partition_epoch = partition_epoch;
                    l.isr = isr;
                }
            }
        }
        self.publish(&mut state);
    }

    /// Reads whole batches from `offset`, at most `max_bytes` (at least one batch), below
    /// `upper_bound`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<Bytes, BrokerError> {
        Ok(self
            .log
            .read_locked()
            .read_below(offset, max_bytes, upper_bound)?)
    }

    /// ListOffsets by timestamp (committed records only).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        let hw = self.view().high_watermark;
        let found = self.log.read_locked().offset_for_timestamp(timestamp)?;
        Ok(found.filter(|(offset, _)| *offset < hw))
    }

    /// Where `epoch` ended in this log (for a follower's OffsetForLeaderEpoch).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.read_locked().end_offset_for_epoch(epoch)
    }

    /// The latest epoch in the local log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log.read_locked().latest_epoch()
    }

    /// Holds the partition's lock while it still follows `leader` in `epoch`, so the caller can
    /// change the log for exactly that role; FENCED_LEADER_EPOCH (nothing done) otherwise.
    fn lock_following(
        &self,
        leader: NodeId,
        epoch: i32,
    ) -> Result<std::sync::MutexGuard<'_, State>, BrokerError> {
        let state = self.state.locked();
        match &state.role {
            Role::Follower {
                leader: Some(l),
                epoch: e,
            } if *l == leader && *e == epoch => Ok(state),
            role => Err(BrokerError::StaleFollowerChange {
                topic: self.topic.clone(),
                partition: self.index,
                leader,
                epoch,
                now: match role {
                    Role::Leader(l) => format!("leader in epoch {}", l.epoch),
                    Role::Follower { leader, epoch } => {
                        format!("following {leader:?} in epoch {epoch}")
                    }
                },
            }),
        }
    }

    /// Appends batches fetched from `leader` in `epoch`, and adopts the leader's HW (capped by
    /// the local LEO), if the replica still follows it (checked under the partition's lock).
    /// Blocking.
    pub fn append_as_follower(
        &self,
        batches: Bytes,
        leader_hw: i64,
        leader: NodeId,
        epoch: i32,
    ) -> Result<(), BrokerError> {
        let mut state = self.lock_following(leader, epoch)?;
        if !batches.is_empty() {
            self.append_with(|log| log.append_as_follower(batches))?;
        }
        let leo = self.log.read_locked().log_end_offset();
        state.high_watermark = state.high_watermark.max(leader_hw.min(leo));
        self.publish(&mut state);
        Ok(())
    }

    /// Truncates the local log to `offset` (divergent tail), if the replica still follows
    /// `leader` in `epoch`. Blocking.
    pub fn truncate_to(&self, offset: i64, leader: NodeId, epoch: i32) -> Result<(), BrokerError> {
        let mut state = self.lock_following(leader, epoch)?;
        let leo = {
            let mut log = self.log.write_locked();
            log.truncate_to(offset)?;
            log.log_end_offset()
        };
        state.high_watermark = state.high_watermark.min(leo);
        self.publish(&mut state);
        Ok(())
    }

    /// Empties the local log and starts it at `offset` (the leader's log starts past it), if
    /// the replica still follows `leader` in `epoch`. Blocking.
    pub fn reset_to(&self, offset: i64, leader: NodeId, epoch: i32) -> Result<(), BrokerError> {
        let mut state = self.lock_following(leader, epoch)?;
        self.log
            .write_locked()
            .truncate_fully_and_start_at(offset)?;
        state.high_watermark = offset;
        self.publish(&mut state);
        Ok(())
    }

    /// Applies a topic config change to the log.
    pub fn set_config(&self, config: LogConfig, min_insync: usize) {
        let recompression = config.recompression();
        {
            let mut log = self.log.write_locked();
            if log.config() != &config {
                log.set_config(config);
            }
        }
        let mut state = self.state.locked();
        state.min_insync = min_insync.max(1);
        state.recompression = recompression;
    }

    /// Periodic upkeep: flush by `flush.ms`, expiry of idle producer ids, retention,
    /// checkpoints. Blocking.
    pub fn maintain(&self, now_ms: i64, checkpoint: bool) -> Result<(), BrokerError> {
        // Sealed segments are fsynced here, without holding the log, so appends never wait
        // on a segment-sized fsync.
        let pending = self.log.write_locked().take_pending_flush()?;
        if let Some(pending) = pending {
            let synced = pending.sync();
            self.log.write_locked().complete_flush(pending, synced)?;
        }
        let mut log = self.log.write_locked();
        log.flush_if_due()?;
        // Every tick, not with the checkpoints: an expiry this late is what
        // producer.id.expiration.ms promises.
        log.expire_producers(now_ms);
        let mut pending_checkpoint = None;
        if checkpoint {
            // Retention only deletes what consumers may no longer need: it never passes the
            // HW, since the active segment (holding everything uncommitted) is never deleted.
            log.enforce_retention(now_ms)?;
            log.trim_sealed()?;
            pending_checkpoint = log.pending_checkpoint();
        }
        drop(log);
        // Checkpoint files are fsynced without holding the log either.
        if let Some(c) = pending_checkpoint {
            c.write()?;
            self.log.write_locked().checkpoint_written(&c);
        }
        let mut state = self.state.locked();
        self.publish(&mut state);
        drop(state);
        self.checkpoint_high_watermark(false)
    }

    /// Writes the HW to [`HIGH_WATERMARK_FILE`] (atomically, fsynced) if it moved since the
    /// last write and, unless `force`, that write is 5 s old (Kafka's
    /// `replica.high.watermark.checkpoint.interval.ms`). Upkeep calls it every second; closing
    /// the log forces it. The checkpoint may lag the HW; it never passes it. Blocking.
    pub fn checkpoint_high_watermark(&self, force: bool) -> Result<(), BrokerError> {
        let hw = self.view().high_watermark;
        let mut written = self.checkpointed_hw.locked();
        let due = force || written.1.elapsed() >= HIGH_WATERMARK_CHECKPOINT_INTERVAL;
        if written.0 == hw || !due {
            return Ok(());
        }
        let dir = self.log.read_locked().dir().to_owned();
        weir_storage::checkpoint::write_atomic(
            &dir,
            HIGH_WATERMARK_FILE,
            hw.to_string().as_bytes(),
        )?;
        *written = (hw, Instant::now());
        Ok(())
    }

    /// Flushes and closes the log cleanly (clean-shutdown marker), with a last HW checkpoint.
    /// Blocking.
    pub fn close(&self) -> Result<(), BrokerError> {
        self.checkpoint_high_watermark(true)?;
        Ok(self.log.write_locked().shutdown()?)
    }

    /// Closes the log and renames its directory `<dir>.deleted-<now_ms>` (the replica was
    /// removed); the manager deletes it after a grace period (`crate::manager::DELETE_DELAY`)
    /// unless the topic comes back first. Returns the new path. Blocking.
    pub fn retire(&self, now_ms: i64) -> Result<std::path::PathBuf, BrokerError> {
        self.close()?;
        let log = self.log.read_locked();
        let dir = log.dir().to_owned();
        drop(log);
        let retired = retired_path(&dir, now_ms);
        std::fs::rename(&dir, &retired).map_err(|e| BrokerError::Retire {
            dir: dir.display().to_string(),
            error: e.to_string(),
        })?;
        Ok(retired)
    }
}

#[cfg(test)]
mod tests {
    //! The leader's replication bookkeeping, on a real log in a temp directory: the high
    //! watermark as the least log end over the (maximal) ISR, ISR expansion once a follower has
    //! caught up, and follower positions the leader's log does not hold refused.

    use super::*;
    use weir_proto::common::v1::ErrorCode;
    use weir_storage::{BatchBuilder, Compression, Record};

    /// This broker, leading in the tests.
    const ME: NodeId = 1;
    /// The broker epoch followers fetch with (recorded in an ISR expansion).
    const BROKER_EPOCH: u64 = 7;

    fn partition(dir: &Path) -> Partition {
        Partition::open(dir, "t", 0, "topic-id", ME, LogConfig::default()).unwrap()
    }

    /// One batch of `n` records, stamped now.
    fn batch(n: usize) -> Bytes {
        let mut builder = BatchBuilder::new(Compression::None);
        for i in 0..n {
            builder.push(&Record {
                timestamp: weir_common::now_ms(),
                value: Some(Bytes::from(format!("v{i}"))),
                ..Record::default()
            });
        }
        builder.build(0).unwrap()
    }

    fn hw(p: &Partition) -> i64 {
        p.view().high_watermark
    }

    /// Follower `r` reports log end `at` in `epoch`; expects it accepted.
    fn fetched(p: &Partition, r: NodeId, epoch: i32, at: i64) -> Option<IsrChange> {
        p.record_follower_fetch(r, epoch, at, BROKER_EPOCH)
            .unwrap_or_else(|e| panic!("follower {r} at {at}: {e}"))
    }

    #[test]
    fn the_high_watermark_is_the_least_log_end_over_the_isr_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        p.make_leader(0, 0, &[1, 2, 3], &[1, 2, 3], 1).unwrap();
        p.append_as_leader(batch(10), false).unwrap();
        assert_eq!(p.view().log_end, 10);
        assert_eq!(hw(&p), 0, "no follower has fetched: nothing is committed");
        // A follower whose position is not known yet holds the HW where it is.
        assert_eq!(fetched(&p, 2, 0, 10), None);
        assert_eq!(hw(&p), 0, "follower 3 has not fetched in this epoch");
        assert_eq!(fetched(&p, 3, 0, 4), None);
        assert_eq!(hw(&p), 4, "min(10, 10, 4)");
        assert_eq!(fetched(&p, 3, 0, 10), None);
        assert_eq!(hw(&p), 10, "every ISR member has everything");
        // A follower that reports less again (it truncated) does not take the HW back.
        assert_eq!(fetched(&p, 2, 0, 6), None);
        assert_eq!(hw(&p), 10, "the HW never moves backwards");
        p.append_as_leader(batch(5), false).unwrap();
        assert_eq!(fetched(&p, 3, 0, 15), None);
        assert_eq!(hw(&p), 10, "follower 2 at 6 holds it at the old HW");
        assert_eq!(fetched(&p, 2, 0, 12), None);
        assert_eq!(hw(&p), 12);
    }

    #[test]
    fn a_replica_outside_the_isr_does_not_hold_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        p.make_leader(0, 0, &[1, 2, 3], &[1, 2], 1).unwrap();
        p.append_as_leader(batch(8), false).unwrap();
        assert_eq!(fetched(&p, 2, 0, 8), None);
        assert_eq!(
            hw(&p),
            8,
            "follower 3, out of the ISR and silent, does not count"
        );
        // A leader alone in its ISR commits what it appends.
        let dir = tempfile::tempdir().unwrap();
        let alone = partition(dir.path());
        alone.make_leader(0, 0, &[1, 2], &[1], 1).unwrap();
        alone.append_as_leader(batch(3), false).unwrap();
        assert_eq!(hw(&alone), 3);
    }

    #[test]
    fn a_follower_that_caught_up_is_proposed_for_the_isr_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        p.make_leader(0, 4, &[1, 2, 3], &[1, 2], 1).unwrap();
        p.append_as_leader(batch(10), false).unwrap();
        assert_eq!(fetched(&p, 2, 0, 10), None, "already in the ISR");
        assert_eq!(hw(&p), 10);
        assert_eq!(fetched(&p, 3, 0, 5), None, "below the HW: not caught up");
        let change = fetched(&p, 3, 0, 10).expect("caught up: an expansion");
        assert_eq!(
            change,
            IsrChange {
                leader_epoch: 0,
                partition_epoch: 4,
                isr: vec![1, 2, 3],
                added: vec![(3, BROKER_EPOCH)],
            }
        );
        assert_eq!(
            fetched(&p, 3, 0, 10),
            None,
            "one change in flight at a time"
        );
        // While it is in flight the new member counts for the HW (the maximal ISR, KIP-497):
        // the controller may elect it as soon as it commits the change.
        p.append_as_leader(batch(5), false).unwrap();
        assert_eq!(fetched(&p, 2, 0, 15), None);
        assert_eq!(hw(&p), 10, "the proposed member, at 10, holds the HW");
        // The controller applies it; the leader adopts the ISR and proposes nothing more.
        p.isr_change_done(Some((0, 5, vec![1, 2, 3])));
        assert_eq!(fetched(&p, 3, 0, 15), None);
        assert_eq!(hw(&p), 15);
        assert_eq!(
            p.isr_shrink(Duration::from_secs(60)),
            None,
            "every member is in sync"
        );
    }

    #[test]
    fn a_refused_expansion_can_be_proposed_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        p.make_leader(0, 0, &[1, 2], &[1], 1).unwrap();
        p.append_as_leader(batch(2), false).unwrap();
        assert!(fetched(&p, 2, 0, 2).is_some());
        // The controller refused it (no state for this epoch): the flag clears, the ISR stays.
        p.isr_change_done(None);
        let again = fetched(&p, 2, 0, 2).expect("proposed again");
        assert_eq!(again.isr, vec![1, 2]);
    }

    #[test]
    fn a_follower_below_the_first_offset_of_the_leaders_epoch_is_not_added() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        // Ten records written in epoch 0, then this replica leads epoch 1 from offset 10.
        p.make_leader(0, 0, &[1, 3], &[1], 1).unwrap();
        p.append_as_leader(batch(10), false).unwrap();
        p.make_leader(1, 1, &[1, 3], &[1], 1).unwrap();
        assert_eq!(hw(&p), 10);
        // At 5 the follower may still hold a tail of epoch 0 that this leader never had
        // (KAFKA-7128): not in sync, even though it is inside the log.
        assert_eq!(fetched(&p, 3, 1, 5), None);
        let change = fetched(&p, 3, 1, 10).expect("at the epoch's start: an expansion");
        assert_eq!((change.leader_epoch, change.isr), (1, vec![1, 3]));
    }

    #[test]
    fn follower_positions_outside_the_leaders_log_are_refused_and_recorded_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        // The log starts at 50 (as after retention): a follower that empties itself there.
        assert!(p.make_follower(Some(2), 0));
        p.reset_to(50, 2, 0).unwrap();
        p.make_leader(1, 0, &[1, 2], &[1, 2], 1).unwrap();
        p.append_as_leader(batch(10), false).unwrap();
        let view = p.view();
        assert_eq!(
            (view.log_start, view.log_end, view.high_watermark),
            (50, 60, 50)
        );
        for at in [61, 1_000, 49, 0, -1] {
            let e = p.record_follower_fetch(2, 1, at, BROKER_EPOCH).unwrap_err();
            assert_eq!(e.code(), ErrorCode::OffsetOutOfRange, "position {at}: {e}");
            assert_eq!(hw(&p), 50, "position {at} moved the HW");
        }
        // Both ends of the log are positions a follower may hold.
        assert_eq!(fetched(&p, 2, 1, 50), None);
        assert_eq!(hw(&p), 50);
        assert_eq!(fetched(&p, 2, 1, 60), None);
        assert_eq!(hw(&p), 60);
    }

    #[test]
    fn fetches_in_another_epoch_or_from_a_stranger_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = partition(dir.path());
        p.make_leader(3, 0, &[1, 2], &[1, 2], 1).unwrap();
        p.append_as_leader(batch(4), false).unwrap();
        let code = |r: NodeId, epoch: i32| {
            p.record_follower_fetch(r, epoch, 4, BROKER_EPOCH)
                .unwrap_err()
                .code()
        };
        assert_eq!(code(2, 2), ErrorCode::FencedLeaderEpoch, "an older epoch");
        assert_eq!(code(2, 4), ErrorCode::UnknownLeaderEpoch, "a newer epoch");
        assert_eq!(code(9, 3), ErrorCode::InvalidRequest, "not a replica");
        assert_eq!(hw(&p), 0, "none of them moved the HW");
        // A follower is no leader to fetch from.
        let dir = tempfile::tempdir().unwrap();
        let follower = partition(dir.path());
        follower.make_follower(Some(2), 3);
        let e = follower
            .record_follower_fetch(3, 3, 0, BROKER_EPOCH)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotLeaderOrFollower);
    }
}
