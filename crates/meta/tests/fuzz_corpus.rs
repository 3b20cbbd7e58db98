//! Replays the seed corpus of the `raft_payload` fuzz target (`fuzz/corpus/raft_payload/`)
//! through `weir_meta::fuzz::raft_payload`. `WEIR_WRITE_FUZZ_SEEDS=1 cargo test -p weir-meta
//! --test fuzz_corpus` regenerates the generated seeds (one of each Raft request, and damaged
//! copies).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Entry, EntryPayload, LeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
use weir_meta::election::{PreVoteRequest, ProbeRequest};
use weir_meta::types::TypeConfig;
use weir_meta::Command;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/raft_payload")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let vote = Vote::new_committed(7, 1);
    let log_id = LogId::new(LeaderId::new(7, 1), 41);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id),
        entries: vec![Entry::<TypeConfig> {
            log_id: LogId::new(LeaderId::new(7, 1), 42),
            payload: EntryPayload::Normal(Command::DeleteTopic {
                name: "orders".into(),
            }),
        }],
        leader_commit: Some(log_id),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::default(),
            snapshot_id: "7-1-41".into(),
        },
        offset: 0,
        data: b"{}".to_vec(),
        done: true,
    };
    let whole = [
        ("append", bincode::serialize(&append).unwrap()),
        (
            "vote",
            bincode::serialize(&VoteRequest::new(Vote::new(8, 2), Some(log_id))).unwrap(),
        ),
        ("snapshot", bincode::serialize(&snapshot).unwrap()),
        (
            "pre-vote",
            bincode::serialize(&PreVoteRequest {
                candidate: 2,
                next_term: 8,
                last_log_id: Some(log_id),
            })
            .unwrap(),
        ),
        (
            "probe",
            bincode::serialize(&ProbeRequest { from: 3 }).unwrap(),
        ),
    ];
    let mut out = Vec::new();
    for (name, bytes) in whole {
        let mut huge_length = bytes.clone();
        // The first length-like field set to 2^60: decoding must not try to allocate it.
        if huge_length.len() >= 48 {
            huge_length[40..48].copy_from_slice(&(1u64 << 60).to_le_bytes());
        }
        out.push((format!("seed-{name}-huge-length"), huge_length));
        out.push((
            format!("seed-{name}-torn"),
            bytes[..bytes.len() / 2].to_vec(),
        ));
        out.push((format!("seed-{name}"), bytes));
    }
    out
}

#[test]
fn the_seed_corpus_replays_without_a_panic() {
    if std::env::var_os("WEIR_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(corpus()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus().join(name), bytes).unwrap();
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(corpus())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the raft_payload corpus is missing");
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| weir_meta::fuzz::raft_payload(&data));
        assert!(r.is_ok(), "input {} panicked", path.display());
    }
}
