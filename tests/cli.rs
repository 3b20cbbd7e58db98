//! The `weir` command-line tool, run as a real process against real `weir-server` processes:
//! the whole life of a topic (create → describe → produce 10,000 keyed lines → consume them
//! back in per-partition order → delete), the documented errors and exit codes for bad
//! flags, unknown topics and an unreachable cluster, and every example command line of every
//! `--help` run against a live cluster; null keys and values through `--null-marker` and a
//! time range read with `--from-timestamp`/`--until-timestamp`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The serial() guard is held across awaits on purpose: it keeps cluster tests one at a time.
#![allow(clippy::await_holding_lock)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{free_port, serial, Cluster, STARTUP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_common::sync::MutexExt;

/// The `weir` binary. It belongs to another package, so cargo does not build it for this
/// test: it is built here, once per test process, into the same target directory and
/// profile as this test binary (`<target>/<profile>/deps/cli-…` → `<target>/<profile>/weir`).
/// Building every time (a no-op when it is fresh) keeps a stale binary from being tested.
fn weir() -> &'static Path {
    static WEIR: OnceLock<PathBuf> = OnceLock::new();
    WEIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev".to_owned(),
            other => other.to_owned(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "weir-cli", "--bin", "weir"])
            .arg("--profile")
            .arg(&profile)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the weir binary");
        assert!(status.success(), "cargo build -p weir-cli failed");
        let bin = profile_dir.join(format!("weir{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// What a `weir` run left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "weir failed: {self:?}");
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `weir ARGS` with `bootstrap` in WEIR_BOOTSTRAP and `stdin` as its input; at most 2
/// minutes.
async fn weir_run(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = weir_spawn(bootstrap, args);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // The command may exit without reading all its input (an error); that is fine.
        let _ = input.write_all(&stdin).await;
    });
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("weir {args:?} did not finish within 2 minutes"))
        .unwrap();
    writer.await.unwrap();
    Run::of(output)
}

/// `weir ARGS` started with `bootstrap` in WEIR_BOOTSTRAP, its stdin, stdout and stderr piped;
/// killed if dropped.
fn weir_spawn(bootstrap: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(weir())
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn weir_ok(bootstrap: &str, args: &[&str]) -> Run {
    weir_run(bootstrap, args, b"").await.ok()
}

/// A healthy one-node cluster (with `env` for its node) and its broker address.
async fn one_node(env: &[(&str, &str)]) -> (Cluster, String) {
    let mut cluster = Cluster::start(1, 0, env);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_active_brokers(1, 1, STARTUP).await;
    let bootstrap = cluster.node(1).broker_addr();
    (cluster, bootstrap)
}

fn keys(value: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_topic_lives_its_whole_life_through_the_cli() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_active_brokers(1, 3, STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    let bootstrap = format!(
        "{},{}",
        cluster.node(1).broker_addr(),
        cluster.node(2).broker_addr()
    );
    let b = bootstrap.as_str();

    // The cluster: three active brokers, a controller leader, three voters.
    let described = weir_ok(b, &["cluster", "describe", "--output", "json"])
        .await
        .json();
    assert_eq!(described["controller_leader"], controller, "{described}");
    let brokers = described["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3, "{described}");
    for (broker, id) in brokers.iter().zip(1u64..) {
        assert_eq!(broker["id"], id, "{described}");
        assert_eq!(broker["address"], cluster.node(id).broker_addr());
        assert_eq!(broker["state"], "active");
    }
    let voters: Vec<&serde_json::Value> = described["quorum"]["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["id"])
        .collect();
    assert_eq!(voters, [1, 2, 3], "{described}");
    let table = weir_ok(b, &["cluster", "describe"]).await.stdout;
    assert!(
        table.starts_with(&format!("Controller leader: {controller}  (term ")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("BROKER  ADDRESS")),
        "{table}"
    );

    // Create, list, describe.
    let created = weir_ok(b, &["topic", "create", "orders", "-p", "4", "-r", "3"]).await;
    assert_eq!(
        created.stdout,
        "created topic `orders` with 4 partitions, replication factor 3\n"
    );
    let listed = weir_ok(b, &["topic", "list"]).await.stdout;
    assert_eq!(listed, "orders\n");
    let topic = weir_ok(b, &["topic", "describe", "orders", "-o", "json"])
        .await
        .json();
    assert_eq!(topic["name"], "orders");
    let partitions = topic["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4);
    for p in partitions {
        assert_eq!(
            keys(p),
            sorted(&[
                "partition",
                "leader",
                "leader_epoch",
                "replicas",
                "isr",
                "log_start_offset",
                "high_watermark",
                "log_end_offset"
            ]),
            "{p}"
        );
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3);
    }
    let table = weir_ok(b, &["topic", "describe", "orders"]).await.stdout;
    let header = table
        .lines()
        .find(|l| l.starts_with("PARTITION"))
        .unwrap_or_else(|| panic!("no partition table in\n{table}"));
    for column in [
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG START",
        "HIGH WATERMARK",
        "LOG END",
    ] {
        assert!(header.contains(column), "{header}");
    }

    // Produce 10,000 keyed lines.
    const N: usize = 10_000;
    let input: String = (0..N).map(|i| format!("k{i}:v{i}\n")).collect();
    let started = Instant::now();
    let produced = weir_run(
        b,
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--acks",
            "all",
            "-H",
            "src=test",
        ],
        input.as_bytes(),
    )
    .await
    .ok();
    assert_eq!(
        produced.stderr.trim_end(),
        format!("produced {N} records to orders (0 failed)")
    );
    eprintln!("produced {N} lines in {:?}", started.elapsed());
    let topic = weir_ok(b, &["topic", "describe", "orders", "-o", "json"])
        .await
        .json();
    let committed: i64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_i64().unwrap())
        .sum();
    assert_eq!(committed, N as i64, "{topic}");

    // Consume them all back: every record once, each partition in offset order, and the
    // records of each partition in the order they were produced.
    let started = Instant::now();
    let consumed = weir_ok(
        b,
        &[
            "consume",
            "orders",
            "--max-messages",
            "10000",
            "--idle-timeout-ms",
            "30000",
            "--format",
            "%p %o %k:%v %h",
        ],
    )
    .await;
    eprintln!("consumed {N} lines in {:?}", started.elapsed());
    assert_eq!(
        consumed.stderr.trim_end(),
        "consumed 10000 records from orders"
    );
    let mut per_partition: BTreeMap<u32, Vec<(i64, usize)>> = BTreeMap::new();
    for line in consumed.stdout.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [p, o, kv, h] = fields[..] else {
            panic!("unexpected line `{line}`")
        };
        let (k, v) = kv.split_once(':').unwrap();
        let i: usize = k.strip_prefix('k').unwrap().parse().unwrap();
        assert_eq!(v, format!("v{i}"));
        assert_eq!(h, "src=test");
        per_partition
            .entry(p.parse().unwrap())
            .or_default()
            .push((o.parse().unwrap(), i));
    }
    let mut seen = vec![false; N];
    for (p, records) in &per_partition {
        for (n, (offset, _)) in records.iter().enumerate() {
            assert_eq!(*offset, n as i64, "partition {p}: offsets out of order");
        }
        assert!(
            records.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p}: records out of production order"
        );
        for (_, i) in records {
            assert!(!seen[*i], "record {i} consumed twice");
            seen[*i] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "some records were not consumed");
    assert_eq!(
        per_partition.keys().copied().collect::<Vec<u32>>(),
        [0, 1, 2, 3],
        "10,000 keys spread over every partition"
    );

    // The same key lands on the same partition, so a keyed record goes after its peers.
    let again = weir_run(
        b,
        &["produce", "orders", "--key-separator", ":"],
        b"k7:again\n",
    )
    .await
    .ok();
    assert_eq!(
        again.stderr.trim_end(),
        "produced 1 record to orders (0 failed)"
    );
    let p7 = per_partition
        .iter()
        .find(|(_, records)| records.iter().any(|(_, i)| *i == 7))
        .map(|(p, records)| (*p, records.len()))
        .unwrap();
    let last = weir_ok(
        b,
        &[
            "consume",
            "orders",
            "--partition",
            &p7.0.to_string(),
            "--offset",
            &p7.1.to_string(),
            "--max-messages",
            "1",
            "--format",
            "%k=%v",
            "--idle-timeout-ms",
            "30000",
        ],
    )
    .await;
    assert_eq!(last.stdout, "k7=again\n");

    // Alter a config, see it in describe.
    weir_ok(
        b,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "retention.ms=3600000",
        ],
    )
    .await;
    let topic = weir_ok(b, &["topic", "describe", "orders", "-o", "json"])
        .await
        .json();
    assert_eq!(topic["configs"]["retention.ms"], "3600000", "{topic}");

    // Delete; afterwards the topic is unknown.
    let deleted = weir_ok(b, &["topic", "delete", "orders"]).await;
    assert_eq!(deleted.stdout, "deleted topic `orders`\n");
    let gone = weir_run(b, &["topic", "describe", "orders"], b"").await;
    assert_eq!(gone.code, 4, "{gone:?}");
    assert_eq!(gone.stderr, "error: unknown topic `orders`\n");
}

#[tokio::test]
async fn bad_flags_and_unknown_topics_give_the_documented_errors() {
    let _serial = serial();
    let (_cluster, bootstrap) = one_node(&[]).await;
    let b = bootstrap.as_str();

    // Usage errors: exit 2, clap's message on stderr, nothing on stdout.
    for (args, says) in [
        (&["topic", "create"][..], "required"),
        (&["topic", "frobnicate"], "unrecognized subcommand"),
        (
            &["consume", "t", "--offset", "soon"],
            "expected earliest, latest or an offset",
        ),
        (
            &["consume", "t", "--format", "%x"],
            "unknown placeholder `%x`",
        ),
        (
            &["consume", "t", "--offset", "1", "--from-timestamp", "5"],
            "cannot be used with",
        ),
        (&["produce", "t", "--acks", "2"], "expected 0, 1 or all"),
        (
            &["topic", "create", "t", "--config", "retention.ms"],
            "expected KEY=VALUE",
        ),
        (&["topic", "alter", "t"], "required"),
        (
            &["--output", "yaml", "topic", "list"],
            "invalid value 'yaml'",
        ),
    ] {
        let run = weir_run(b, args, b"").await;
        assert_eq!(run.code, 2, "weir {args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "weir {args:?}: {run:?}");
        assert!(run.stderr.contains(says), "weir {args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "weir {args:?}: {run:?}");
    }

    // Help: exit 0, the exit codes documented, examples under every subcommand.
    let help = weir_ok(b, &["--help"]).await.stdout;
    assert!(help.contains("Exit codes:"), "{help}");
    for args in [
        &["cluster", "describe", "--help"][..],
        &["topic", "create", "--help"],
        &["topic", "list", "--help"],
        &["topic", "describe", "--help"],
        &["topic", "delete", "--help"],
        &["topic", "alter", "--help"],
        &["produce", "--help"],
        &["consume", "--help"],
    ] {
        let help = weir_ok(b, args).await.stdout;
        assert!(help.contains("Examples:"), "weir {args:?}:\n{help}");
    }

    // Unknown topics: exit 4 and one line naming the topic.
    for args in [
        &["topic", "describe", "nope"][..],
        &["topic", "delete", "nope"],
        &["topic", "alter", "nope", "--config", "retention.ms=1"],
        &["produce", "nope"],
        &["consume", "nope", "--idle-timeout-ms", "100"],
    ] {
        let run = weir_run(b, args, b"a line\n").await;
        assert_eq!(run.code, 4, "weir {args:?}: {run:?}");
        assert_eq!(run.stderr, "error: unknown topic `nope`\n", "weir {args:?}");
    }
    weir_ok(b, &["topic", "create", "small", "--partitions", "2"]).await;
    let run = weir_run(b, &["consume", "small", "--partition", "2"], b"").await;
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: unknown partition 2 of topic `small` (it has 2 partitions)\n"
    );

    // The cluster refuses: exit 1 with the server's reason and code.
    let run = weir_run(b, &["topic", "create", "small"], b"").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: topic `small` already exists [TOPIC_ALREADY_EXISTS]\n"
    );
    let run = weir_run(b, &["topic", "create", "big", "-r", "2"], b"").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: invalid replication factor 2: must be between 1 and the number of live brokers \
         (1) [INVALID_REPLICATION_FACTOR]\n"
    );

    // A line without the key separator fails alone; the rest are produced; exit 1.
    let run = weir_run(
        b,
        &["produce", "small", "--key-separator", ":"],
        b"k:v\nno separator\nk2:v2\n",
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: line 2: no key separator `:` in the line\nproduced 2 records to small (1 failed)\n"
    );

    // Empty input produces nothing and succeeds; consume with idle timeout ends cleanly.
    let run = weir_run(b, &["produce", "small"], b"").await.ok();
    assert_eq!(run.stderr, "produced 0 records to small (0 failed)\n");
    let run = weir_ok(
        b,
        &[
            "consume",
            "small",
            "--idle-timeout-ms",
            "1000",
            "-o",
            "json",
        ],
    )
    .await;
    let values: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The two records, each from its partition (their order across partitions is free).
    let mut got: Vec<(String, String)> = values
        .iter()
        .map(|v| (v["key"].to_string(), v["value"].to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("\"k\"".to_string(), "\"v\"".to_string()),
            ("\"k2\"".to_string(), "\"v2\"".to_string())
        ],
        "{run:?}"
    );
    assert_eq!(run.stderr, "consumed 2 records from small\n");
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_quickly() {
    // Build (or find) the binary first, so that the timing below is weir's alone.
    weir();
    // Nothing listens on this port.
    let dead = format!("127.0.0.1:{}", free_port());
    for args in [
        &["topic", "list"][..],
        &["cluster", "describe"],
        &["produce", "t"],
        &["consume", "t"],
    ] {
        let started = Instant::now();
        let run = weir_run(&dead, args, b"x\n").await;
        assert_eq!(run.code, 3, "weir {args:?}: {run:?}");
        assert!(
            run.stderr
                .starts_with(&format!("error: cannot reach the cluster at {dead} (")),
            "weir {args:?}: {run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "weir {args:?} took {:?}",
            started.elapsed()
        );
    }
    // --bootstrap wins over WEIR_BOOTSTRAP.
    let run = weir_run("127.0.0.1:1", &["--bootstrap", &dead, "topic", "list"], b"").await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach the cluster at {dead} (")),
        "{run:?}"
    );
    // A malformed address is a usage error.
    let run = weir_run("not an address", &["topic", "list"], b"").await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: invalid --bootstrap `not an address`"),
        "{run:?}"
    );
}

/// The sum of topic `t`'s high watermarks over the partitions each running node leads (asked
/// directly; a node that does not answer counts 0): how many records are committed so far.
async fn committed(cluster: &mut Cluster) -> i64 {
    let mut total = 0;
    for id in cluster.running() {
        let mut client = cluster.broker_client(id);
        let req = weir_proto::broker::v1::PartitionOffsetsRequest { topic: "t".into() };
        let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(2), client.partition_offsets(req)).await
        else {
            continue;
        };
        total += r
            .into_inner()
            .partitions
            .iter()
            .filter(|p| p.error.is_none())
            .map(|p| p.high_watermark)
            .sum::<i64>();
    }
    total
}

/// Issue 14 (liveness): `weir produce --acks all` keeps retrying through a leader kill instead
/// of giving up early. 3 nodes, 6 partitions, RF 3, min.insync.replicas 2: produce 100,000
/// numbered lines, then produce 100,000 more while the leader of partition 0 is killed with
/// kill -9 in the middle of the run, twice. Each run must exit 0 (every record delivered, as the
/// CLI reports), and every number must be readable afterwards (a retried batch may appear
/// twice: the producer is not idempotent yet).
#[tokio::test]
async fn produce_keeps_retrying_through_a_leader_kill() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_active_brokers(1, 3, STARTUP).await;
    let bootstrap = cluster.broker_addrs();
    let b = bootstrap.join(",");
    weir_ok(
        &b,
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "6",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
    )
    .await;
    let lines = |from: u64, to: u64| -> Vec<u8> {
        (from..to)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let first = weir_run(&b, &["produce", "t", "--acks", "all"], &lines(0, 100_000)).await;
    assert_eq!(first.code, 0, "{first:?}");
    for round in 0..2u64 {
        let topic = weir_ok(&b, &["topic", "describe", "t", "-o", "json"])
            .await
            .json();
        let leader = topic["partitions"][0]["leader"]
            .as_u64()
            .expect("partition 0 led");
        let from = 100_000 * (round + 1);
        // Half the input first; the leader is killed once that half is being written, and the
        // other half follows, so the kill always lands in the middle of the run.
        let mut child = weir_spawn(&b, &["produce", "t", "--acks", "all"]);
        let mut input = child.stdin.take().unwrap();
        input.write_all(&lines(from, from + 50_000)).await.unwrap();
        input.flush().await.unwrap();
        let before = committed(&mut cluster).await;
        let deadline = Instant::now() + STARTUP;
        while committed(&mut cluster).await <= before {
            assert!(
                Instant::now() < deadline,
                "round {round}: nothing committed from the run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.kill(leader);
        input
            .write_all(&lines(from + 50_000, from + 100_000))
            .await
            .unwrap();
        drop(input);
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the produce run finished within 2 minutes")
            .unwrap();
        let run = Run::of(output);
        assert_eq!(
            run.code, 0,
            "round {round}: the producer gave up during the failover: {}",
            run.stderr
        );
        cluster.spawn(leader);
        cluster
            .wait_active_brokers((1..=3).find(|id| *id != leader).unwrap(), 3, STARTUP)
            .await;
    }
    let consumed = weir_ok(
        &b,
        &[
            "consume",
            "t",
            "--idle-timeout-ms",
            "5000",
            "--format",
            "%v",
        ],
    )
    .await;
    let mut seen = vec![false; 300_000];
    for line in consumed.stdout.lines() {
        let i: usize = line
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        seen[i] = true;
    }
    let missing: Vec<usize> = (0..300_000).filter(|i| !seen[*i]).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged records missing, e.g. {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The help texts' examples
// ---------------------------------------------------------------------------------------------

/// The lines of a help text's `title` section (`Examples:`, `Commands:`), trimmed: the lines
/// indented by exactly two spaces after the title, up to the first line that is not.
fn help_section(help: &str, title: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != title)
        .skip(1)
        .take_while(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Every example line of every `--help`: `weir --help` and, through the `Commands:` lists,
/// every subcommand's; each with the command whose help shows it.
async fn help_examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<Vec<String>> = [Vec::new()].into();
    let mut seen = 0;
    while let Some(path) = queue.pop_front() {
        seen += 1;
        assert!(seen < 50, "more commands than expected: {path:?}");
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = weir_ok("127.0.0.1:1", &args).await.stdout;
        let command = ["weir"]
            .into_iter()
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let examples = help_section(&help, "Examples:");
        let subcommands = help_section(&help, "Commands:");
        // A command one runs (not a group of them) shows how to run it.
        assert!(
            !examples.is_empty() || !subcommands.is_empty(),
            "`{command} --help` has no examples:\n{help}"
        );
        for line in examples {
            assert!(
                line.contains("weir "),
                "`{command} --help`: example `{line}` runs no weir"
            );
            out.push((command.clone(), line));
        }
        for line in subcommands {
            let name = line.split_whitespace().next().unwrap().to_owned();
            if name != "help" {
                let mut sub = path.clone();
                sub.push(name);
                queue.push_back(sub);
            }
        }
    }
    out
}

/// Splits a shell line at `sep` outside quotes.
fn split_unquoted(line: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, _) if c == sep => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    parts
}

/// A shell command's words, quotes removed (enough for the examples: no escapes).
fn shell_words(command: &str) -> Vec<String> {
    split_unquoted(command, ' ')
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(|w| w.replace(['\'', '"'], ""))
        .collect()
}

/// `line` with every address list in it (`10.0.0.1:9700,10.0.0.2:9700`, as in
/// `--bootstrap` and `WEIR_BOOTSTRAP=`) replaced by `bootstrap`.
fn with_bootstrap(line: &str, bootstrap: &str) -> String {
    let is_address = |s: &str| {
        s.split(',').all(|a| {
            a.rsplit_once(':').is_some_and(|(host, port)| {
                host.parse::<std::net::Ipv4Addr>().is_ok() && port.parse::<u16>().is_ok()
            })
        })
    };
    let mut out = String::new();
    let mut run = String::new();
    for c in line.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() || matches!(c, '.' | ':' | ',') {
            run.push(c);
            continue;
        }
        if is_address(&run) {
            out.push_str(bootstrap);
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// What one example needs from the cluster, read off its `weir …` words.
#[derive(Debug)]
struct ExampleCommand {
    /// The subcommand words (`topic create`, `consume`).
    path: Vec<String>,
    /// The topic it names, if any (its first positional, or `--topic`).
    topic: Option<String>,
    /// Its flags and their values, by name (`--max-messages` → `100`; a bare flag → "").
    flags: BTreeMap<String, String>,
    /// The broker it names (`cluster unregister-broker ID`).
    broker: Option<u64>,
}

impl ExampleCommand {
    fn parse(words: &[String]) -> Self {
        let mut path = Vec::new();
        let mut topic = None;
        let mut flags = BTreeMap::new();
        let mut broker = None;
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            if let Some(flag) = w.strip_prefix('-') {
                let value = words.get(i + 1).filter(|v| !v.starts_with('-'));
                flags.insert(format!("-{flag}"), value.cloned().unwrap_or_default());
                i += 1 + usize::from(value.is_some());
                continue;
            }
            let names_topic = matches!(
                path.iter().map(String::as_str).collect::<Vec<_>>()[..],
                ["produce"] | ["consume"] | ["topic", "create" | "describe" | "delete" | "alter"]
            );
            let names_broker = path
                .iter()
                .map(String::as_str)
                .eq(["cluster", "unregister-broker"]);
            if names_topic && topic.is_none() {
                topic = Some(w.clone());
            } else if names_broker && broker.is_none() {
                broker = Some(w.parse().unwrap());
            } else if topic.is_none() && broker.is_none() {
                path.push(w.clone());
            }
            i += 1;
        }
        // Some commands name their topic with a flag.
        let topic = topic.or_else(|| flags.get("--topic").cloned());
        Self {
            path,
            topic,
            flags,
            broker,
        }
    }

    fn is(&self, path: &[&str]) -> bool {
        self.path
            .iter()
            .map(String::as_str)
            .eq(path.iter().copied())
    }
}

/// Topic names, through `weir topic list --output json`.
async fn topic_names(b: &str) -> Vec<String> {
    let listed = weir_ok(b, &["topic", "list", "--output", "json"])
        .await
        .json();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// High watermarks of `topic`'s partitions, through `weir topic describe`.
async fn high_watermarks(b: &str, topic: &str) -> Vec<i64> {
    let described = weir_ok(b, &["topic", "describe", topic, "-o", "json"])
        .await
        .json();
    described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_i64().unwrap())
        .collect()
}

/// Records every partition of a topic an example consumes holds before it runs: enough for
/// `--partition 2 --offset 1500 --max-messages 10`.
const EXAMPLE_RECORDS_PER_PARTITION: i64 = 1600;

/// The state of broker `id` in `weir cluster describe` ("active", "fenced"), `None` when it
/// is not listed.
async fn broker_state(b: &str, id: u64) -> Option<String> {
    let described = weir_ok(b, &["cluster", "describe", "-o", "json"])
        .await
        .json();
    described["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|broker| broker["id"] == id)
        .map(|broker| broker["state"].as_str().unwrap().to_owned())
}

/// Makes the cluster what `example` expects: the broker it unregisters gone (killed, and
/// fenced once its session expired), the topic it creates absent, the topic it uses present
/// (4 partitions, RF 3), and the one it consumes filled.
async fn prepare_for(cluster: &mut Cluster, b: &str, example: &ExampleCommand) {
    if let Some(id) = example.broker {
        cluster.kill(id);
        let deadline = Instant::now() + STARTUP;
        while broker_state(b, id).await.as_deref() != Some("fenced") {
            assert!(
                Instant::now() < deadline,
                "broker {id} not fenced within {STARTUP:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let Some(topic) = &example.topic else {
        return;
    };
    let exists = topic_names(b).await.contains(topic);
    if example.is(&["topic", "create"]) {
        if exists {
            weir_ok(b, &["topic", "delete", topic]).await;
            let deadline = Instant::now() + STARTUP;
            while topic_names(b).await.contains(topic) {
                assert!(
                    Instant::now() < deadline,
                    "`{topic}` not deleted within {STARTUP:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        return;
    }
    if !exists {
        weir_ok(b, &["topic", "create", topic, "-p", "4", "-r", "3"]).await;
    }
    if example.is(&["consume"]) {
        for (p, hw) in high_watermarks(b, topic).await.into_iter().enumerate() {
            let missing = EXAMPLE_RECORDS_PER_PARTITION - hw;
            if missing > 0 {
                let lines: String = (0..missing).map(|i| format!("fixture-{p}-{i}\n")).collect();
                let p = p.to_string();
                let run = weir_run(b, &["produce", topic, "--partition", &p], lines.as_bytes())
                    .await
                    .ok();
                assert!(run.stderr.ends_with(" (0 failed)\n"), "{run:?}");
            }
        }
    }
}

/// Kills a process group it started when dropped: an example's shell and everything in it.
struct ProcessGroup(u32);

impl ProcessGroup {
    fn signal(&self, signal: &str) {
        // Quiet: the group may be gone already.
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

/// Every example command line in every `--help` runs against a live 3-node cluster (the
/// examples create topics with replication factor 3) and exits 0: each line is run as it is
/// written by bash (with `set -o pipefail`, so a failing `weir` in a pipeline fails it), the
/// example addresses replaced by the cluster's, `weir` on the PATH and WEIR_BOOTSTRAP set,
/// in a folder holding the files the examples read. Before each, the topic it creates is
/// removed and the topic it uses is created and filled. What each reports is checked where
/// it is known: a produce reports every input line produced and none failed, a consume with
/// --max-messages N reports N records, one ending on --idle-timeout-ms all the records from
/// where it started. An example that consumes until Ctrl-C gets a record produced after it
/// started, then SIGINT, and must print that record and exit 0.
#[tokio::test]
async fn every_example_in_the_help_texts_runs_against_a_live_cluster() {
    let _serial = serial();
    let examples = help_examples().await;
    // Three voters, and a fourth (broker-only) node for `cluster unregister-broker 4` to
    // remove once it is gone; the bootstrap list leaves it out.
    let mut cluster = Cluster::start(3, 1, &[]);
    cluster.wait_healthy(STARTUP).await;
    cluster.wait_active_brokers(1, 4, STARTUP).await;
    let bootstrap = cluster.broker_addrs()[..3].join(",");
    let b = bootstrap.as_str();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("events.txt"),
        "imported one\nimported two\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("orders.txt"), "order 1\norder 2\norder 3\n").unwrap();
    let path = format!(
        "{}:{}",
        weir().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let has_jq = std::process::Command::new("jq")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_jq {
        eprintln!("jq is not installed: `| jq …` stages are left out and the JSON checked here");
    }

    for (under, example) in &examples {
        let line = with_bootstrap(example, b);
        let stages = split_unquoted(&line, '|');
        let at = stages
            .iter()
            .position(|s| {
                shell_words(s)
                    .iter()
                    .find(|w| !w.contains('='))
                    .is_some_and(|w| w == "weir")
            })
            .unwrap_or_else(|| panic!("`{example}` (under {under}) runs no weir"));
        // The weir words, without the environment assignments before them.
        let words = shell_words(&stages[at]);
        let words = &words[words.iter().position(|w| w == "weir").unwrap()..];
        let (weir_words, redirect) = match words.iter().position(|w| w == "<") {
            Some(i) => (&words[..i], words.get(i + 1).cloned()),
            None => (words, None),
        };
        let command = ExampleCommand::parse(&weir_words[1..]);
        let piped_to_jq = stages.len() > at + 1;
        let script = if piped_to_jq && !has_jq {
            stages[..=at].join("|")
        } else {
            line.clone()
        };
        // Lines of input a produce gets: from the stages before it, or the file it reads.
        let input_lines = if at > 0 {
            let out = std::process::Command::new("bash")
                .args(["-c", &stages[..at].join("|")])
                .current_dir(dir.path())
                .output()
                .unwrap();
            Some(String::from_utf8(out.stdout).unwrap().lines().count())
        } else {
            redirect.map(|file| {
                std::fs::read_to_string(dir.path().join(file))
                    .unwrap()
                    .lines()
                    .count()
            })
        };
        prepare_for(&mut cluster, b, &command).await;
        let records_before: i64 = match &command.topic {
            Some(t) if command.is(&["consume"]) => high_watermarks(b, t).await.iter().sum(),
            _ => 0,
        };
        let until_ctrl_c = command.is(&["consume"])
            && !command.flags.contains_key("--max-messages")
            && !command.flags.contains_key("--idle-timeout-ms");

        let mut child = tokio::process::Command::new("bash")
            .args(["-o", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("WEIR_BOOTSTRAP", b)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let group = ProcessGroup(child.id().unwrap());
        // Input for an example that reads the terminal.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"typed one\ntyped two\n").await.unwrap();
        drop(stdin);
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        // Stdout as it comes, so that a consume running until Ctrl-C can be watched.
        let printed: Arc<Mutex<Vec<u8>>> = Arc::default();
        let out = {
            let printed = Arc::clone(&printed);
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 1 << 16];
                loop {
                    let n = stdout.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    printed.locked().extend_from_slice(&chunk[..n]);
                }
            })
        };
        let err = tokio::spawn(async move {
            let mut s = Vec::new();
            stderr.read_to_end(&mut s).await.unwrap();
            s
        });
        let marker = format!("marker-{}", std::process::id());
        if until_ctrl_c {
            // A record produced after it started must reach it; one reading from the latest
            // offset only sees those produced after it asked where the end is, so a marker
            // is produced every half second until one is printed. Then Ctrl-C.
            let topic = command.topic.clone().unwrap();
            let shows_marker = || String::from_utf8_lossy(&printed.locked()).contains(&marker);
            let deadline = Instant::now() + STARTUP;
            while !shows_marker() {
                assert!(
                    Instant::now() < deadline,
                    "`{example}` printed none of the records produced while it ran"
                );
                let line = format!("{marker}\n");
                weir_run(b, &["produce", &topic], line.as_bytes())
                    .await
                    .ok();
                let wait_until = Instant::now() + Duration::from_millis(500);
                while !shows_marker() && Instant::now() < wait_until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            group.signal("-INT");
        }
        let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
            .await
            .unwrap_or_else(|_| panic!("`{example}` did not finish within 2 minutes"))
            .unwrap();
        out.await.unwrap();
        let run = Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8(std::mem::take(&mut *printed.locked())).unwrap(),
            stderr: String::from_utf8(err.await.unwrap()).unwrap(),
        };
        drop(group);
        assert_eq!(
            run.code, 0,
            "`{example}` (under {under}) as `{script}`: {run:?}"
        );
        assert!(!run.stderr.contains("error"), "`{example}`: {run:?}");
        if piped_to_jq && !has_jq {
            let values =
                serde_json::Deserializer::from_str(&run.stdout).into_iter::<serde_json::Value>();
            let values: Result<Vec<_>, _> = values.collect();
            assert!(
                values.is_ok_and(|v| !v.is_empty()),
                "`{example}`: stdout is not JSON: {run:?}"
            );
        }

        let topic = command.topic.as_deref().unwrap_or_default();
        let plural = |n: i64| if n == 1 { "record" } else { "records" };
        if command.is(&["produce"]) {
            let n = input_lines.unwrap_or(2) as i64;
            assert_eq!(
                run.stderr,
                format!("produced {n} {} to {topic} (0 failed)\n", plural(n)),
                "`{example}`"
            );
        }
        if command.is(&["consume"]) {
            let want = if let Some(max) = command.flags.get("--max-messages") {
                Some(max.parse::<i64>().unwrap())
            } else if until_ctrl_c {
                None
            } else {
                // Reading on until idle: everything from where it started.
                match command.flags.get("--offset").map(String::as_str) {
                    None | Some("earliest") => Some(records_before),
                    Some(other) => panic!("`{example}`: no expectation for --offset {other}"),
                }
            };
            let consumed = run
                .stderr
                .strip_prefix("consumed ")
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("`{example}`: no count on stderr: {run:?}"));
            assert_eq!(
                run.stderr,
                format!("consumed {consumed} {} from {topic}\n", plural(consumed)),
                "`{example}`"
            );
            if let Some(want) = want {
                assert_eq!(consumed, want, "`{example}`: {run:?}");
            }
            if !piped_to_jq {
                assert_eq!(run.stdout.lines().count() as i64, consumed, "`{example}`");
            }
        }
        if let Some(id) = command.broker {
            assert_eq!(run.stdout, format!("Unregistered broker {id}.\n"));
            assert_eq!(broker_state(b, id).await, None, "broker {id} still listed");
        }
        eprintln!("ok: {example}");
    }
}

/// `weir bench` through the real client, as a user runs it: `produce` creates the topic and
/// reports exactly the records and bytes sent, none failed, and latency percentiles in order;
/// `consume` reads exactly what the topic holds; `e2e` delivers every record at the rate asked;
/// `--group` is refused (consumer groups are not built yet), and so is an empty producer
/// buffer.
#[tokio::test]
async fn weir_bench_reports_what_it_sent_and_read() {
    let _serial = serial();
    let (cluster, _) = Cluster::start_ready(1, &[]).await;
    let b = cluster.nodes[0].broker_addr();
    let run = weir_ok(
        &b,
        &[
            "bench",
            "produce",
            "--topic",
            "wb",
            "--records",
            "20000",
            "--record-size",
            "100",
            "--partitions",
            "3",
            "--keys",
            "10",
            "--output",
            "json",
        ],
    )
    .await;
    let report = run.json();
    assert_eq!(
        keys(&report),
        sorted(&[
            "bench",
            "bytes",
            "failed",
            "latency_ms",
            "mb_per_sec",
            "records",
            "records_per_sec",
            "seconds"
        ])
    );
    assert_eq!(report["records"], 20000);
    assert_eq!(report["bytes"], 20000 * 100);
    assert_eq!(report["failed"], 0);
    let l = &report["latency_ms"];
    let (p50, p99, p999, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["p999"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max, "{l}");
    assert!(report["records_per_sec"].as_f64().unwrap() > 0.0);

    let read = weir_ok(
        &b,
        &[
            "bench",
            "consume",
            "--topic",
            "wb",
            "--consumers",
            "2",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(read["records"], 20000);
    assert_eq!(
        read["bytes"],
        20000 * 100 + 20000 * 5,
        "values and the keys key-0..key-9"
    );
    assert!(read.get("latency_ms").is_none());

    let e2e = weir_ok(
        &b,
        &[
            "bench",
            "e2e",
            "--topic",
            "wb-e2e",
            "--rate",
            "2000",
            "--seconds",
            "1",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(e2e["records"], 2000);
    assert_eq!(e2e["failed"], 0);
    assert!(e2e["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    let refused = weir_run(
        &b,
        &["bench", "consume", "--topic", "wb", "--group", "g"],
        b"",
    )
    .await;
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("consumer groups are not built yet"),
        "{refused:?}"
    );

    let no_buffer = weir_run(
        &b,
        &[
            "bench",
            "produce",
            "--topic",
            "wb",
            "--records",
            "10",
            "--buffer-bytes",
            "0",
        ],
        b"",
    )
    .await;
    assert_eq!(no_buffer.code, 2, "{no_buffer:?}");
    assert!(no_buffer.stderr.contains("buffer_memory"), "{no_buffer:?}");
}

/// Null keys and values through `--null-marker` both ways (and as JSON nulls), a time range
/// read with `--from-timestamp` and `--until-timestamp`, which ends by itself once every
/// partition reached its end, and `--compression-level` within the codec's range only.
#[tokio::test]
async fn null_markers_and_a_timestamp_range_through_the_cli() {
    let _serial = serial();
    let (_cluster, bootstrap) = one_node(&[]).await;
    let b = bootstrap.as_str();
    weir_ok(b, &["topic", "create", "nulls", "-p", "1", "-r", "1"]).await;
    let input = b"a:1\nNULL:2\nc:NULL\nd:\n";
    let run = weir_run(
        b,
        &[
            "produce",
            "nulls",
            "--key-separator",
            ":",
            "--null-marker",
            "NULL",
        ],
        input,
    )
    .await
    .ok();
    assert!(
        run.stderr
            .ends_with("produced 4 records to nulls (0 failed)\n"),
        "{run:?}"
    );
    let args = [
        "consume",
        "nulls",
        "--format",
        "%k=%v",
        "--idle-timeout-ms",
        "1000",
    ];
    let plain = weir_ok(b, &args).await.stdout;
    assert_eq!(
        plain, "a=1\n=2\nc=\nd=\n",
        "null prints as nothing by default"
    );
    let marked = [&args[..], &["--null-marker", "<null>"]].concat();
    let marked = weir_ok(b, &marked).await.stdout;
    assert_eq!(
        marked, "a=1\n<null>=2\nc=<null>\nd=\n",
        "an empty value is not null"
    );
    let json = weir_ok(
        b,
        &[
            "consume",
            "nulls",
            "-o",
            "json",
            "--idle-timeout-ms",
            "1000",
        ],
    )
    .await
    .stdout;
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{json}");
    assert!(
        rows[1]["key"].is_null() && rows[2]["value"].is_null(),
        "{json}"
    );
    assert_eq!(rows[3]["value"], "", "{json}");

    // Records stamped 1000, 2000, … 5000 on two partitions, through the Rust client.
    weir_ok(b, &["topic", "create", "times", "-p", "2", "-r", "1"]).await;
    let producer = weir_client::Producer::connect(
        weir_client::ClientConfig::new([bootstrap.clone()]),
        weir_client::ProducerConfig::default(),
    )
    .await
    .unwrap();
    let mut deliveries = Vec::new();
    for p in 0..2u32 {
        for t in 1..=5i64 {
            let record = weir_client::ProducerRecord::new("times", format!("{p}@{t}"))
                .partition(p)
                .timestamp(t * 1000);
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    producer.close().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    let range = [
        "consume",
        "times",
        "--from-timestamp",
        "2000",
        "--until-timestamp",
        "4000",
    ];
    let run = weir_ok(b, &range).await;
    let mut got: Vec<&str> = run.stdout.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["0@2", "0@3", "1@2", "1@3"], "{run:?}");
    assert!(
        run.stderr.ends_with("consumed 4 records from times\n"),
        "{run:?}"
    );
    let empty = weir_ok(b, &["consume", "times", "--until-timestamp", "500"]).await;
    assert_eq!(empty.stdout, "", "nothing is older than 500: {empty:?}");
    let beyond = weir_ok(
        b,
        &[
            "consume",
            "times",
            "--from-timestamp",
            "5000",
            "--until-timestamp",
            "99999",
        ],
    )
    .await;
    assert_eq!(
        beyond.stdout.lines().count(),
        2,
        "up to each partition's end: {beyond:?}"
    );
    let bad = weir_run(b, &["consume", "times", "--until-timestamp", "-1"], b"").await;
    assert_eq!(bad.code, 2, "{bad:?}");

    // Compression levels: the codec's range, and none for lz4.
    let level = [
        "produce",
        "nulls",
        "--compression",
        "zstd",
        "--compression-level",
        "19",
    ];
    let run = weir_run(b, &level, b"leveled\n").await.ok();
    assert!(
        run.stderr
            .ends_with("produced 1 record to nulls (0 failed)\n"),
        "{run:?}"
    );
    let last = weir_ok(
        b,
        &["consume", "nulls", "--offset", "4", "--max-messages", "1"],
    )
    .await;
    assert_eq!(last.stdout, "leveled\n");
    let no_levels = [
        "produce",
        "nulls",
        "--compression",
        "lz4",
        "--compression-level",
        "3",
    ];
    let bad = weir_run(b, &no_levels, b"x\n").await;
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(
        bad.stderr.contains("lz4 has no compression levels"),
        "{bad:?}"
    );
}

/// Server-wide topic defaults (`--topic-config-default`, here through its environment
/// variable): `weir topic describe` shows every config with its value and source, a topic's
/// override winning over the server's default and that over the built-in one, and
/// `compression.type=zstd` from the server makes the leader store a plainly produced batch as
/// zstd, read back the same.
#[tokio::test]
async fn topic_configs_show_their_source_and_server_defaults_apply() {
    let _serial = serial();
    let defaults = [(
        "WEIR_TOPIC_CONFIG_DEFAULTS",
        "retention.ms=86400000,compression.type=zstd",
    )];
    let (mut cluster, bootstrap) = one_node(&defaults).await;
    let b = bootstrap.as_str();
    let create = ["topic", "create", "sourced", "-p", "1", "-r", "1"];
    weir_ok(
        b,
        &[&create[..], &["--config", "retention.ms=3600000"]].concat(),
    )
    .await;
    let topic = weir_ok(b, &["topic", "describe", "sourced", "-o", "json"])
        .await
        .json();
    let entries = topic["config_entries"].as_array().unwrap();
    let entry = |name: &str| {
        let e = entries.iter().find(|e| e["name"] == name).unwrap();
        (
            e["value"].as_str().unwrap().to_owned(),
            e["source"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(entry("retention.ms"), ("3600000".into(), "topic".into()));
    assert_eq!(
        entry("compression.type"),
        ("zstd".into(), "server-default".into())
    );
    assert_eq!(
        entry("segment.bytes"),
        ("1073741824".into(), "built-in".into())
    );
    assert!(entries.len() >= 15, "every key is listed: {topic}");
    let table = weir_ok(b, &["topic", "describe", "sourced"]).await.stdout;
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["compression.type", "zstd", "server-default"]),
        "{table}"
    );

    let run = weir_run(b, &["produce", "sourced"], b"one\ntwo\nthree\n")
        .await
        .ok();
    assert!(run.stderr.ends_with("(0 failed)\n"), "{run:?}");
    let back = weir_ok(b, &["consume", "sourced", "--idle-timeout-ms", "1000"]).await;
    assert_eq!(back.stdout, "one\ntwo\nthree\n");
    let dir = common::data::partition_dir(&cluster.node(1).data_dir, "sourced", 0);
    let mut codecs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
            for batch in weir_storage::batch::Batches::new(bytes).map_while(Result::ok) {
                codecs.push(batch.header().compression().unwrap());
            }
        }
    }
    assert!(!codecs.is_empty(), "no batch on disk in {}", dir.display());
    assert!(
        codecs.iter().all(|c| *c == weir_client::Compression::Zstd),
        "stored as {codecs:?}"
    );
}
