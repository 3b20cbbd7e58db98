//! A `scripts/bench-peers.sh` output directory, read back for the plots.
//!
//! The directory holds `summary.json`, the table the script printed (each workload's median
//! records/s for Weir and its peer, in the order the run measured them), and for each workload
//! and system a `<workload>-<system>.jsonl` file, one line per measured run: the JSON object a
//! weir-peer-bench command (or, for the broker-alone figure, the produce-bench example)
//! printed. Throughput comes from the summary; the latency percentiles are the medians over
//! the runs' lines, as the script takes them, because the summary has no p99.9.
//!
//! The summary is written by Python's `json` module, which writes a figure the script could
//! not compute as a bare `NaN` (not JSON); summaries of runs before the script wrote null
//! there have them, so `NaN` and `Infinity` outside strings are read as null.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// One run of `scripts/bench-peers.sh`, as the plots need it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunResults {
    /// The directory's name: the run's start time (UTC), e.g. `20261202T101500Z`.
    pub(crate) name: String,
    /// The workloads, in the order the run measured them.
    pub(crate) workloads: Vec<WorkloadResult>,
}

/// What Weir was measured against in a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// NATS JetStream, the same workload through async-nats.
    Jetstream,
    /// Weir's broker alone (the produce-bench example's prebuilt batches): the `client` row.
    BrokerOnly,
}

impl Peer {
    /// The system's name in the script's file names.
    pub(crate) fn system(self) -> &'static str {
        match self {
            Peer::Jetstream => "jetstream",
            Peer::BrokerOnly => "broker-only",
        }
    }

    /// The name a reader of a plot knows it by.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Peer::Jetstream => "NATS JetStream",
            Peer::BrokerOnly => "Weir's broker alone (prebuilt batches)",
        }
    }
}

/// One workload's figures: medians over its measured runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkloadResult {
    /// The script's name for it (`100b`, `1kib`, `rf3`, `consume`, ...).
    pub(crate) name: String,
    /// What Weir was measured against.
    pub(crate) peer: Peer,
    /// Weir's records per second.
    pub(crate) weir_records_per_sec: f64,
    /// The peer's records per second.
    pub(crate) peer_records_per_sec: f64,
    /// Weir's latency percentiles.
    pub(crate) weir_latency: Percentiles,
    /// The peer's latency percentiles.
    pub(crate) peer_latency: Percentiles,
    /// Measured runs behind Weir's figures.
    pub(crate) runs: usize,
}

/// Latency percentiles in milliseconds, each the median over the runs that reported it;
/// `None` where no run did (`consume` has no latency, the broker-alone runs report none in
/// `latency_ms`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Percentiles {
    /// Median.
    pub(crate) p50: Option<f64>,
    /// 99th percentile.
    pub(crate) p99: Option<f64>,
    /// 99.9th percentile.
    pub(crate) p999: Option<f64>,
}

impl Percentiles {
    /// Whether no percentile was measured.
    pub(crate) fn is_empty(&self) -> bool {
        self.p50.is_none() && self.p99.is_none() && self.p999.is_none()
    }
}

/// summary.json as the script writes it; other keys (the raw limits, p50, p99, fraction of
/// raw) are not needed here and are ignored.
#[derive(Debug, Deserialize)]
struct SummaryFile {
    /// Workload name → its row, in the order measured.
    workloads: InOrder,
}

/// A row of summary.json's `workloads`.
#[derive(Debug, Deserialize)]
struct SummaryRow {
    /// Weir's median records/s (null where Python wrote NaN).
    #[serde(default)]
    weir_records_per_sec: Option<f64>,
    /// The peer's median records/s.
    #[serde(default)]
    peer_records_per_sec: Option<f64>,
    /// `jetstream` or `broker-only`; absent in summaries written before the script named it
    /// (then the `client` row's peer is the broker alone and every other row's JetStream).
    #[serde(default)]
    peer: Option<String>,
}

/// A JSON object's entries in the file's order (serde_json's map would sort them).
#[derive(Debug)]
struct InOrder(Vec<(String, SummaryRow)>);

impl<'de> Deserialize<'de> for InOrder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Collects the entries as they come.
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = InOrder;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of workloads")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InOrder, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(InOrder(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// One line of a `<workload>-<system>.jsonl` file: what the plots read of a run's report.
#[derive(Debug, Deserialize)]
struct RunLine {
    /// Null (consume), or absent (the broker-alone runs report `p50_ms` and `p99_ms` instead,
    /// which the script does not compare either).
    #[serde(default)]
    latency_ms: Option<RunLatency>,
}

/// A run's `latency_ms`; a null figure is read as missing.
#[derive(Debug, Deserialize)]
struct RunLatency {
    /// Median, ms.
    #[serde(default)]
    p50: Option<f64>,
    /// 99th percentile, ms.
    #[serde(default)]
    p99: Option<f64>,
    /// 99.9th percentile, ms.
    #[serde(default)]
    p999: Option<f64>,
}

/// Reads a bench-peers output directory: its `summary.json` and the runs of every workload the
/// summary lists. Fails, naming the file and what is wrong with it, when the summary is missing
/// or malformed, lists no workloads or a rate that is not a positive number, or a workload's
/// runs file is missing or has a line that is not a run's JSON.
pub(crate) fn read(dir: &Path) -> anyhow::Result<RunResults> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is it a bench-peers output dir?)",
            path.display()
        )
    })?;
    let summary: SummaryFile = serde_json::from_str(&python_floats_to_null(&text))
        .with_context(|| format!("{} is not a bench-peers summary", path.display()))?;
    anyhow::ensure!(
        !summary.workloads.0.is_empty(),
        "{} lists no workloads",
        path.display()
    );
    let mut workloads = Vec::with_capacity(summary.workloads.0.len());
    for (name, row) in summary.workloads.0 {
        let bad = |what: String| anyhow::anyhow!("{}: workload `{name}`: {what}", path.display());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("not a workload name (letters, digits, - and _)".into()));
        }
        let rate = |key: &str, rate: Option<f64>| match rate {
            Some(r) if r.is_finite() && r > 0.0 => Ok(r),
            Some(r) => Err(bad(format!("{key} is {r}, not a positive rate"))),
            None => Err(bad(format!("{key} is missing, null or NaN"))),
        };
        let weir_records_per_sec = rate("weir_records_per_sec", row.weir_records_per_sec)?;
        let peer_records_per_sec = rate("peer_records_per_sec", row.peer_records_per_sec)?;
        let peer = match row.peer.as_deref() {
            Some("jetstream") => Peer::Jetstream,
            Some("broker-only") => Peer::BrokerOnly,
            Some(other) => {
                return Err(bad(format!(
                    "unknown peer `{other}` (expected jetstream or broker-only)"
                )))
            }
            None if name == "client" => Peer::BrokerOnly,
            None => Peer::Jetstream,
        };
        let (weir_latency, runs) = runs_latency(&run_file(dir, &name, "weir"))?;
        let (peer_latency, _) = runs_latency(&run_file(dir, &name, peer.system()))?;
        workloads.push(WorkloadResult {
            name,
            peer,
            weir_records_per_sec,
            peer_records_per_sec,
            weir_latency,
            peer_latency,
            runs,
        });
    }
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(RunResults { name, workloads })
}

/// Where the script writes `workload`'s runs on `system`.
fn run_file(dir: &Path, workload: &str, system: &str) -> PathBuf {
    dir.join(format!("{workload}-{system}.jsonl"))
}

/// The median latency percentiles over the runs in `path`, and how many runs it holds.
fn runs_latency(path: &Path) -> anyhow::Result<(Percentiles, usize)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (a workload's runs)", path.display()))?;
    let (mut p50, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new());
    let mut runs = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let run: RunLine = serde_json::from_str(&python_floats_to_null(line))
            .with_context(|| format!("{} line {}: not a run's JSON", path.display(), i + 1))?;
        runs += 1;
        if let Some(l) = run.latency_ms {
            p50.extend(l.p50.filter(|v| v.is_finite()));
            p99.extend(l.p99.filter(|v| v.is_finite()));
            p999.extend(l.p999.filter(|v| v.is_finite()));
        }
    }
    anyhow::ensure!(runs > 0, "{} holds no runs", path.display());
    let latency = Percentiles {
        p50: median(p50),
        p99: median(p99),
        p999: median(p999),
    };
    Ok((latency, runs))
}

/// The median (of an even count, the mean of the middle two, as Python's
/// `statistics.median`); `None` for no values.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// `text` with Python's `NaN`, `Infinity` and `-Infinity` outside strings replaced by `null`.
fn python_floats_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a small bench-peers output dir (two workloads, the second the `client` row with
    /// the broker alone as its peer and NaN where Python could not compute a figure) into
    /// `dir`. The figures are made up, for tests only.
    pub(crate) fn write_sample(dir: &Path) {
        let summary = r#"{
  "raw": {"sequential_write_mb_per_sec": 1500.0},
  "workloads": {
    "1kib": {"weir_records_per_sec": 600000.0, "peer_records_per_sec": 120000.0,
             "weir_p99_ms": 100.0, "peer_p99_ms": 5.0, "weir_fraction_of_raw": 0.4},
    "consume": {"weir_records_per_sec": 900000.0, "peer_records_per_sec": 300000.0,
                "weir_p99_ms": null, "peer_p99_ms": null, "weir_fraction_of_raw": NaN},
    "client": {"weir_records_per_sec": 560000.0, "peer_records_per_sec": 720000.0,
               "peer_p99_ms": NaN, "weir_fraction_of_raw": NaN}
  }
}"#;
        let run = |rate: f64, p50: f64| {
            format!(
                r#"{{"records":1,"bytes":1,"seconds":1.0,"records_per_sec":{rate},"mb_per_sec":1.0,"latency_ms":{{"p50":{p50},"p99":{},"p999":{},"max":300.0}},"failed":0}}"#,
                p50 * 10.0,
                p50 * 20.0
            )
        };
        let consume = r#"{"records":1,"bytes":1,"seconds":1.0,"records_per_sec":1.0,"mb_per_sec":1.0,"latency_ms":null,"failed":0}"#;
        let broker_only =
            r#"{"bench":"produce","records_per_sec":720000,"p50_ms":1.0,"p99_ms":2.0}"#;
        let files = [
            ("summary.json", summary.to_owned()),
            (
                "1kib-weir.jsonl",
                [run(6e5, 3.0), run(6e5, 5.0), run(6e5, 4.0)].join("\n"),
            ),
            ("1kib-jetstream.jsonl", format!("{}\n", run(1.2e5, 1.0))),
            ("consume-weir.jsonl", format!("{consume}\n{consume}\n")),
            ("consume-jetstream.jsonl", format!("{consume}\n")),
            ("client-weir.jsonl", run(5.6e5, 2.0)),
            ("client-broker-only.jsonl", broker_only.to_owned()),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("writing the sample");
        }
    }

    #[test]
    fn a_run_dir_is_read_in_the_order_measured_with_median_latencies() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_sample(dir.path());
        let results = read(dir.path()).expect("the sample reads");
        let names: Vec<_> = results.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["1kib", "consume", "client"]);
        let kib = &results.workloads[0];
        assert_eq!(kib.peer, Peer::Jetstream);
        assert_eq!(kib.runs, 3);
        assert_eq!(kib.weir_records_per_sec, 600_000.0);
        assert_eq!(kib.weir_latency.p50, Some(4.0));
        assert_eq!(kib.weir_latency.p999, Some(80.0));
        assert_eq!(kib.peer_latency.p99, Some(10.0));
        assert!(results.workloads[1].weir_latency.is_empty());
        let client = &results.workloads[2];
        assert_eq!(client.peer, Peer::BrokerOnly);
        assert!(client.peer_latency.is_empty());
    }

    #[test]
    fn a_malformed_summary_is_refused_with_the_file_and_the_fault_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("summary.json");
        let refusal = |text: &str| {
            std::fs::write(&path, text).expect("writing summary.json");
            format!(
                "{:#}",
                read(dir.path()).expect_err("a malformed summary is refused")
            )
        };

        let err = refusal("{\"raw\": {}, \"workloads\": [1, 2");
        assert!(
            err.contains("summary.json is not a bench-peers summary"),
            "{err}"
        );
        let err = refusal("{\"raw\": {}}");
        assert!(err.contains("missing field `workloads`"), "{err}");
        let err = refusal("{\"workloads\": {}}");
        assert!(err.contains("lists no workloads"), "{err}");
        let err = refusal(
            r#"{"workloads": {"1kib": {"weir_records_per_sec": NaN, "peer_records_per_sec": 1.0}}}"#,
        );
        assert!(
            err.contains("workload `1kib`: weir_records_per_sec is missing"),
            "{err}"
        );
        let err = refusal(
            r#"{"workloads": {"../x": {"weir_records_per_sec": 1.0, "peer_records_per_sec": 1.0}}}"#,
        );
        assert!(
            err.contains("workload `../x`: not a workload name"),
            "{err}"
        );
        let err = refusal(
            r#"{"workloads": {"1kib": {"weir_records_per_sec": 0.0, "peer_records_per_sec": 1.0}}}"#,
        );
        assert!(
            err.contains("weir_records_per_sec is 0, not a positive rate"),
            "{err}"
        );
        // A summary naming a workload whose runs are not there.
        let err = refusal(
            r#"{"workloads": {"1kib": {"weir_records_per_sec": 1.0, "peer_records_per_sec": 1.0}}}"#,
        );
        assert!(err.contains("1kib-weir.jsonl (a workload's runs)"), "{err}");
        // A runs file with a line that is not a run.
        std::fs::write(
            dir.path().join("1kib-weir.jsonl"),
            "{\"records\": 1}\nnot json\n",
        )
        .expect("writing runs");
        let err = refusal(
            r#"{"workloads": {"1kib": {"weir_records_per_sec": 1.0, "peer_records_per_sec": 1.0}}}"#,
        );
        assert!(
            err.contains("1kib-weir.jsonl line 2: not a run's JSON"),
            "{err}"
        );
        // No summary at all.
        std::fs::remove_file(&path).expect("removing summary.json");
        let err = format!("{:#}", read(dir.path()).expect_err("no summary"));
        assert!(err.contains("is it a bench-peers output dir?"), "{err}");
    }

    #[test]
    fn python_nan_becomes_null_outside_strings_only() {
        assert_eq!(
            python_floats_to_null(r#"{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN \" NaN"}"#),
            r#"{"a": null, "b": [null, null], "c": "NaN \" NaN"}"#
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
