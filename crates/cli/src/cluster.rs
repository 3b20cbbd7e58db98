//! `weir cluster …`: what the cluster looks like — brokers, the controller leader and the
//! metadata quorum.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;
use weir_client::{Admin, ClusterDescription, QuorumMember};

use crate::output::{opt, print_json, print_text, OutputFormat, Table};
use crate::Context;

/// `weir cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers (id, address, rack, state), the controller leader, and the quorum's voters and
    /// learners with how far each has replicated the metadata log.
    #[command(after_help = "\
Examples:
  weir cluster describe
  weir cluster describe --output json | jq .controller_leader
  weir cluster describe --bootstrap 10.0.0.1:9700,10.0.0.2:9700

JSON keys: controller_leader, term, metadata_version, brokers[].{id,address,rack,state},
quorum.{voters,learners}[].{id,address,match_index,lag}")]
    Describe,
    /// Removes a broker that is gone for good from the cluster's broker list (Kafka's
    /// UnregisterBroker). Only a fenced broker can be removed; a live one registers again at
    /// its next heartbeat. Partitions that list it as a replica keep it.
    #[command(after_help = "\
Examples:
  weir cluster unregister-broker 4")]
    UnregisterBroker {
        /// The broker's id.
        id: u64,
    },
}

/// Runs a `weir cluster` subcommand.
pub async fn run(cmd: ClusterCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCommand::Describe => describe(ctx).await,
        ClusterCommand::UnregisterBroker { id } => {
            let admin = Admin::connect(ctx.client.clone()).await?;
            admin.unregister_broker(id).await?;
            print_text(&format!("Unregistered broker {id}.\n"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn describe(ctx: &Context) -> anyhow::Result<ExitCode> {
    let admin = Admin::connect(ctx.client.clone()).await?;
    let cluster = admin.describe_cluster().await?;
    match ctx.output {
        OutputFormat::Json => print_json(&ClusterJson::from(&cluster))?,
        OutputFormat::Table => print_text(&render(&cluster))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The table form: a summary line, the brokers, then the quorum.
fn render(cluster: &ClusterDescription) -> String {
    let mut out = format!(
        "Controller leader: {}  (term {}, metadata version {})\n\n",
        opt(cluster.controller_leader),
        cluster.term,
        cluster.metadata_version
    );
    let mut brokers = Table::new(&["BROKER", "ADDRESS", "RACK", "STATE"]);
    for b in &cluster.brokers {
        brokers.row(vec![
            b.id.to_string(),
            b.address.clone(),
            opt(b.rack.clone()),
            b.state.to_string(),
        ]);
    }
    out.push_str(&brokers.render());
    out.push('\n');
    let mut quorum = Table::new(&["QUORUM", "NODE", "ADDRESS", "MATCH INDEX", "LAG"]);
    let members = (cluster.voters.iter().map(|m| ("voter", m)))
        .chain(cluster.learners.iter().map(|m| ("learner", m)));
    for (role, m) in members {
        let role = if Some(m.id) == cluster.controller_leader {
            "voter (leader)"
        } else {
            role
        };
        quorum.row(vec![
            role.to_owned(),
            m.id.to_string(),
            m.address.clone(),
            m.match_index.to_string(),
            m.lag.to_string(),
        ]);
    }
    out.push_str(&quorum.render());
    out
}

/// The JSON form of `cluster describe` (its keys are part of the CLI's contract).
#[derive(Debug, Serialize)]
struct ClusterJson {
    /// Node id of the controller leader; null when there is none.
    controller_leader: Option<u64>,
    /// Raft term.
    term: u64,
    /// Metadata version (the Raft log index last applied).
    metadata_version: u64,
    /// Every registered broker.
    brokers: Vec<BrokerJson>,
    /// The metadata quorum.
    quorum: QuorumJson,
}

/// One broker.
#[derive(Debug, Serialize)]
struct BrokerJson {
    /// Broker id.
    id: u64,
    /// host:port of its broker listener.
    address: String,
    /// Rack, null for none.
    rack: Option<String>,
    /// `active`, `fenced` or `unknown`.
    state: weir_client::BrokerState,
}

/// Voters and learners of the metadata quorum.
#[derive(Debug, Serialize)]
struct QuorumJson {
    /// The controllers (Raft voters).
    voters: Vec<MemberJson>,
    /// Broker-only nodes following the metadata log.
    learners: Vec<MemberJson>,
}

/// One quorum member.
#[derive(Debug, Serialize)]
struct MemberJson {
    /// Node id.
    id: u64,
    /// Its controller (Raft) address.
    address: String,
    /// The last metadata log index known replicated to it.
    match_index: u64,
    /// How many entries it is behind the leader.
    lag: u64,
}

impl From<&QuorumMember> for MemberJson {
    fn from(m: &QuorumMember) -> Self {
        Self {
            id: m.id,
            address: m.address.clone(),
            match_index: m.match_index,
            lag: m.lag,
        }
    }
}

impl From<&ClusterDescription> for ClusterJson {
    fn from(c: &ClusterDescription) -> Self {
        Self {
            controller_leader: c.controller_leader,
            term: c.term,
            metadata_version: c.metadata_version,
            brokers: c
                .brokers
                .iter()
                .map(|b| BrokerJson {
                    id: b.id,
                    address: b.address.clone(),
                    rack: b.rack.clone(),
                    state: b.state,
                })
                .collect(),
            quorum: QuorumJson {
                voters: c.voters.iter().map(MemberJson::from).collect(),
                learners: c.learners.iter().map(MemberJson::from).collect(),
            },
        }
    }
}
