//! When a controller starts an election: pre-vote (Raft thesis §9.6) on top of openraft 0.9,
//! which has none.
//!
//! openraft's own election timer is turned off (`Config::enable_elect = false`); [`Election`]
//! runs in its place on every voter. A voter that has heard from no leader for its election
//! timeout (a random time in `[max, 2·max − min]` of the configured range, so that peers'
//! leases have run out) first asks every other voter, with the `PreVote` RPC, whether it would
//! vote for it in the next term. Only with a majority of "yes" (its own included) does it start
//! the real election (`Raft::trigger().elect()`). A pre-vote changes nothing on the receiver:
//! no term moves, no vote is stored.
//!
//! A voter answers "yes" only if all of these hold:
//! - the candidate is a voter of the current membership;
//! - the receiver does not lead (a leader answers for itself that it is alive);
//! - it has not heard from a leader for the leader lease (openraft's lease: the election
//!   timeout's upper bound; within it openraft would refuse the real vote anyway);
//! - the candidate's next term is not behind the receiver's term, and its last log id is at
//!   least the receiver's (the real vote's rule).
//!
//! So a voter that merely missed heartbeats — paused, or cut off from the leader while the rest
//! of the quorum still hears it — cannot force an election on waking that the healthy leader did
//! not need (Kafka KRaft has the same rule, KIP-996). A dead or cut-off leader is replaced as
//! before: its followers stop hearing it, their leases run out, and the first whose timeout
//! fires gets every "yes".
//!
//! ## A voter that lost its metadata store
//!
//! A voter whose store is empty when it starts, in a quorum of several voters, cannot tell a
//! new quorum from one it belonged to and lost its disk in. An empty voter that voted would
//! grant its vote to any candidate (every log is at least as long as nothing), so with one
//! lagging voter it could elect a leader that lacks committed entries, which are then lost.
//! So it starts with its vote withheld ([`Election::join`]) and asks the other voters
//! (`Probe`):
//! - if any holds a log past the initial membership entry, or knows a leader, the quorum
//!   exists: the voter keeps its vote withheld (Vote and PreVote refused, no election) while the
//!   leader replicates to it — it is still a member under its id — until its log reaches the
//!   leader's last log index as the leader answered it, then votes again. This is the safety of
//!   Kafka's "rejoin as an observer, then be promoted" (KIP-853) without two membership
//!   changes; it logs a warning, for the operator to learn that a disk was lost;
//! - if a majority of voters (itself included) answer with empty logs, the quorum is new:
//!   it initializes it, as every voter of a new quorum does;
//! - otherwise it waits, vote withheld, and asks again.
//!
//! A majority that lost its stores at once cannot be told from a new quorum by anyone: that is
//! a loss of the metadata, as in any Raft system. A single-voter quorum initializes at once (the
//! zero-argument start).
//!
//! "Heard from a leader" is recorded by the Raft service ([`Election::heard_from_leader`]) each
//! time the local Raft node accepts an AppendEntries or a snapshot chunk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::sync::MutexExt;

use futures::StreamExt;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, LogId, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_common::random_u64;
use weir_proto::channel::{Channels, Profile};
use weir_proto::raft::v1::raft_client::RaftClient;
use weir_proto::raft::v1::RaftMessage;

use crate::store::LogStore;
use crate::types::{NodeId, Raft};

/// "Would you vote for me in `next_term`?"
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteRequest {
    /// The asking voter.
    pub candidate: NodeId,
    /// The term it would stand for: its current term + 1.
    pub next_term: u64,
    /// Its last log id.
    pub last_log_id: Option<LogId<NodeId>>,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreVoteResponse {
    /// Whether the receiver would vote for the candidate.
    pub granted: bool,
    /// The receiver's current term.
    pub term: u64,
    /// Why not, when not granted (for the candidate's log).
    pub reason: String,
}

/// "What do you hold?" (see [`Election::join`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The asking voter.
    pub from: NodeId,
}

/// What a voter holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProbeResponse {
    /// Its last log index (`None`: an empty log).
    pub last_log_index: Option<u64>,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Whether it leads.
    pub is_leader: bool,
    /// Its current term.
    pub term: u64,
}

impl ProbeResponse {
    /// What `raft` holds now.
    pub fn of(raft: &Raft) -> Self {
        let m = raft.metrics();
        let m = m.borrow();
        Self {
            last_log_index: m.last_log_index,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            term: m.current_term,
        }
    }

    /// Whether this voter belongs to a quorum that has done anything: a log past the initial
    /// membership entry (index 0), or a known leader.
    fn quorum_exists(&self) -> bool {
        self.last_log_index.unwrap_or(0) > 0 || self.leader.is_some()
    }
}

/// The pre-vote election driver of one voter, and its answers to other voters' pre-votes.
pub struct Election {
    me: NodeId,
    raft: Raft,
    log: LogStore,
    /// Election timeout range (openraft's `election_timeout_min/max`).
    timeout: (Duration, Duration),
    /// Last time the local Raft node accepted a leader's AppendEntries or snapshot chunk, or
    /// led; `None`: never since start.
    contact: Mutex<Option<Instant>>,
    /// Set while this voter must not vote: it started with an empty store (see [`Election::join`]).
    withheld: AtomicBool,
    peers: Channels,
}

impl Election {
    /// The driver for voter `me` of `raft` (whose log store is `log`), with openraft's election
    /// timeout range `timeout`; pre-votes go out over `peers`.
    pub fn new(
        me: NodeId,
        raft: Raft,
        log: LogStore,
        timeout: (Duration, Duration),
        peers: Channels,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            raft,
            log,
            timeout,
            contact: Mutex::new(None),
            withheld: AtomicBool::new(false),
            peers,
        })
    }

    /// The channel profile pre-votes use: a pre-vote unanswered within the election timeout's
    /// lower bound is a "no".
    pub fn profile(timeout: (Duration, Duration)) -> Profile {
        Profile::CONTROLLER.request_timeout(timeout.0)
    }

    /// From now until [`Election::join`] releases it, this voter refuses votes and pre-votes
    /// and starts no election.
    pub fn withhold_votes(&self) {
        self.withheld.store(true, Ordering::SeqCst);
    }

    /// Whether this voter withholds its vote (it is catching up after losing its store).
    pub fn votes_withheld(&self) -> bool {
        self.withheld.load(Ordering::SeqCst)
    }

    /// Notes that the local Raft node just accepted a message from the leader.
    pub fn heard_from_leader(&self) {
        *self.contact.locked() = Some(Instant::now());
    }

    fn since_contact(&self) -> Option<Duration> {
        self.contact.locked().map(|c| c.elapsed())
    }

    /// The leader lease: openraft refuses real votes this long after a leader's message.
    fn lease(&self) -> Duration {
        self.timeout.1
    }

    /// A random election timeout in `[max, 2·max − min]`.
    fn next_timeout(&self) -> Duration {
        let (min, max) = self.timeout;
        let spread = max.saturating_sub(min).as_millis() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            random_u64() % spread
        };
        max + Duration::from_millis(jitter)
    }

    async fn last_log_id(&self) -> Option<LogId<NodeId>> {
        let mut log = self.log.clone();
        match log.get_log_state().await {
            Ok(state) => state.last_log_id,
            Err(e) => {
                tracing::warn!(error = %e, "reading the log state for a pre-vote");
                None
            }
        }
    }

    /// This voter's answer to `req`. Changes nothing.
    pub async fn answer(&self, req: &PreVoteRequest) -> PreVoteResponse {
        let (state, term, candidate_is_voter) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == req.candidate);
            (m.state, m.current_term, voter)
        };
        let deny = |reason: String| PreVoteResponse {
            granted: false,
            term,
            reason,
        };
        if !candidate_is_voter {
            return deny(format!("node {} is not a voter", req.candidate));
        }
        if self.votes_withheld() {
            return deny(format!(
                "node {} withholds its vote until it has caught up",
                self.me
            ));
        }
        if state == ServerState::Leader {
            return deny(format!("node {} leads term {term}", self.me));
        }
        if let Some(since) = self.since_contact() {
            if since < self.lease() {
                return deny(format!(
                    "node {} heard from the leader {} ms ago",
                    self.me,
                    since.as_millis()
                ));
            }
        }
        if req.next_term < term {
            return deny(format!("term {} is behind term {term}", req.next_term));
        }
        let mine = self.last_log_id().await;
        if req.last_log_id < mine {
            return deny(format!(
                "log {:?} is behind node {}'s {mine:?}",
                req.last_log_id, self.me
            ));
        }
        PreVoteResponse {
            granted: true,
            term,
            reason: String::new(),
        }
    }

    /// Runs until `shutdown`: each time no leader has been heard from for an election timeout,
    /// a pre-vote round, and an election when it wins.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = (self.timeout.0 / 5).max(Duration::from_millis(10));
        let mut timeout = self.next_timeout();
        let mut next_attempt = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let (state, voters, term) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let voters: Vec<(NodeId, String)> = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter_map(|id| {
                        let node = m.membership_config.membership().get_node(&id)?;
                        Some((id, node.addr.clone()))
                    })
                    .collect();
                (m.state, voters, m.current_term)
            };
            if state == ServerState::Leader {
                self.heard_from_leader();
                continue;
            }
            if !voters.iter().any(|(id, _)| *id == self.me)
                || state == ServerState::Shutdown
                || self.votes_withheld()
            {
                continue;
            }
            let quiet = self.since_contact().is_none_or(|since| since >= timeout);
            if !quiet || Instant::now() < next_attempt {
                continue;
            }
            timeout = self.next_timeout();
            next_attempt = Instant::now() + timeout;
            let req = PreVoteRequest {
                candidate: self.me,
                next_term: term + 1,
                last_log_id: self.last_log_id().await,
            };
            let round_started = Instant::now();
            let won = self.pre_vote_round(&req, &voters).await;
            // A leader may have been elected while the round ran (a "yes" from a candidate that
            // then won): an election now would depose it.
            let heard_since = self
                .since_contact()
                .is_some_and(|since| since < round_started.elapsed());
            if won && !heard_since {
                tracing::info!(
                    term = req.next_term,
                    "won the pre-vote; starting an election"
                );
                if let Err(e) = self.raft.trigger().elect().await {
                    tracing::warn!(error = %e, "starting an election");
                }
            }
        }
    }

    /// Asks every other voter; true with a majority of "yes", this voter's own counted.
    async fn pre_vote_round(&self, req: &PreVoteRequest, voters: &[(NodeId, String)]) -> bool {
        let needed = voters.len() / 2 + 1;
        let mut granted = 1;
        if granted >= needed {
            return true;
        }
        let Ok(payload) = bincode::serialize(req) else {
            return false;
        };
        let asks = voters
            .iter()
            .filter(|(id, _)| *id != self.me)
            .map(|(id, addr)| {
                let channel = self.peers.get(addr);
                let payload = payload.clone();
                async move {
                    let mut client = RaftClient::new(channel.ok()?);
                    let answer = client
                        .pre_vote(RaftMessage {
                            payload: payload.into(),
                        })
                        .await;
                    let answer: PreVoteResponse = match answer {
                        Ok(r) => bincode::deserialize(&r.into_inner().payload).ok()?,
                        Err(status) => {
                            tracing::debug!(peer = id, error = %status, "pre-vote not answered");
                            return None;
                        }
                    };
                    Some((*id, answer))
                }
            });
        // Counted as they come: the round ends at a majority, without waiting for a voter that
        // does not answer (down, or cut off) to time out.
        let mut asks: futures::stream::FuturesUnordered<_> = asks.collect();
        while let Some(answer) = asks.next().await {
            let Some((id, answer)) = answer else {
                continue;
            };
            if answer.granted {
                granted += 1;
                if granted >= needed {
                    break;
                }
            } else {
                tracing::debug!(peer = id, reason = %answer.reason, "pre-vote refused");
            }
        }
        tracing::debug!(granted, needed, term = req.next_term, "pre-vote round");
        granted >= needed
    }
}

impl Election {
    /// Joins the quorum `members` as a voter that started with an empty store (see the module
    /// docs): initializes a new quorum, or rejoins an existing one with its vote withheld until
    /// it has caught up. Returns when this voter votes again, or at `shutdown`.
    pub async fn join(
        self: Arc<Self>,
        members: BTreeMap<NodeId, BasicNode>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.withhold_votes();
        let needed = members.len() / 2 + 1;
        let mut rejoining = false;
        let mut last_note: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let answers = self.probe(&members).await;
            if !rejoining && answers.iter().any(|(_, a)| a.quorum_exists()) {
                rejoining = true;
                tracing::warn!(
                    "this voter's metadata store is empty, but the quorum already has a log: it \
                     lost its store; rejoining, its vote withheld until it has caught up"
                );
            }
            if rejoining {
                if let Some((leader, a)) = answers.iter().find(|(_, a)| a.is_leader) {
                    let target = a.last_log_index.unwrap_or(0);
                    if self.caught_up_to(target, &mut shutdown).await {
                        self.withheld.store(false, Ordering::SeqCst);
                        tracing::info!(
                            leader,
                            index = target,
                            "caught up with the quorum after losing the metadata store; voting again"
                        );
                        return;
                    }
                }
            } else if 1 + answers.len() >= needed {
                match self.raft.initialize(members.clone()).await {
                    Ok(()) => tracing::info!(node = self.me, "initialized the metadata quorum"),
                    Err(e) => tracing::debug!(error = %e, "quorum already initialized"),
                }
                self.withheld.store(false, Ordering::SeqCst);
                return;
            }
            if last_note.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                last_note = Some(Instant::now());
                tracing::info!(
                    answered = answers.len(),
                    needed = needed - 1,
                    rejoining,
                    "metadata store empty: waiting for the other voters (vote withheld)"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Waits (at most 5 s) until the local log reaches `target`; true if it did.
    async fn caught_up_to(&self, target: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if metrics.borrow().last_log_index >= Some(target) {
                return true;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = shutdown.changed() => return false,
            }
        }
    }

    /// Asks every other member what it holds; the answers that came (bounded by the channel's
    /// request timeout).
    async fn probe(&self, members: &BTreeMap<NodeId, BasicNode>) -> Vec<(NodeId, ProbeResponse)> {
        let Ok(payload) = bincode::serialize(&ProbeRequest { from: self.me }) else {
            return Vec::new();
        };
        let asks = members
            .iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(id, node)| {
                let channel = self.peers.get(&node.addr);
                let payload = payload.clone();
                async move {
                    let mut client = RaftClient::new(channel.ok()?);
                    let r = client
                        .probe(RaftMessage {
                            payload: payload.into(),
                        })
                        .await
                        .ok()?;
                    let answer: ProbeResponse =
                        bincode::deserialize(&r.into_inner().payload).ok()?;
                    Some((*id, answer))
                }
            });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("me", &self.me)
            .field("timeout", &self.timeout)
            .field("since_contact", &self.since_contact())
            .field("withheld", &self.votes_withheld())
            .finish()
    }
}
