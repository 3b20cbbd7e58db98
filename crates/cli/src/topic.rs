//! `weir topic …`: create, list, describe, alter and delete topics.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use weir_client::{Admin, TopicDescription};

use crate::error::{for_topic, CliError, Exit};
use crate::output::{ids, opt, print_json, print_text, OutputFormat, Table};
use crate::Context;

/// `weir topic` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "\
Examples:
  weir topic create orders
  weir topic create orders --partitions 6 --replication-factor 3
  weir topic create audit -p 3 --config retention.ms=604800000 --config retention.bytes=1073741824

Without --replication-factor, a topic gets min(3, active brokers) replicas per partition.")]
    Create(CreateArgs),
    /// List topic names, one per line (a JSON array with --output json).
    #[command(after_help = "\
Examples:
  weir topic list
  weir topic list --output json | jq -r '.[]'")]
    List,
    /// Describe a topic: configs, and per partition the leader, leader epoch, replicas, ISR,
    /// log start offset, high watermark and log end offset.
    #[command(after_help = "\
Examples:
  weir topic describe orders
  weir topic describe orders --output json | jq '.partitions[] | {partition, leader}'

Each config is shown with the value in effect and its source: topic (an override set with
--config), server-default (the server's --topic-config-default) or built-in.

JSON keys: name, id, configs (the overrides), config_entries[].{name,value,source},
partitions[].{partition,leader,leader_epoch,replicas,isr,log_start_offset,high_watermark,
log_end_offset}")]
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and all its records.
    #[command(after_help = "\
Examples:
  weir topic delete orders")]
    Delete {
        /// Topic name.
        name: String,
    },
    /// Set or remove topic configuration overrides.
    #[command(after_help = "\
Examples:
  weir topic alter orders --config retention.ms=86400000
  weir topic alter orders --config min.insync.replicas=2 --delete-config retention.bytes")]
    Alter(AlterArgs),
}

/// Arguments of `weir topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name.
    name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1, value_name = "N")]
    partitions: i32,
    /// Replicas per partition [default: min(3, active brokers)].
    #[arg(long, short = 'r', value_name = "R")]
    replication_factor: Option<i32>,
    /// A configuration override, KEY=VALUE; repeat for several.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
}

/// Arguments of `weir topic alter`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
pub struct AlterArgs {
    /// Topic name.
    name: String,
    /// Set a configuration override, KEY=VALUE; repeat for several.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value,
          group = "change")]
    configs: Vec<(String, String)>,
    /// Remove an override (back to the cluster default); repeat for several.
    #[arg(long = "delete-config", value_name = "KEY", group = "change")]
    delete: Vec<String>,
}

/// Parses `KEY=VALUE` (the value may itself contain `=`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Runs a `weir topic` subcommand.
pub async fn run(cmd: TopicCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let admin = Admin::connect(ctx.client.clone()).await?;
    match cmd {
        TopicCommand::Create(args) => create(&admin, args, ctx).await?,
        TopicCommand::List => {
            let mut names = admin.list_topics().await?;
            names.sort();
            match ctx.output {
                OutputFormat::Json => print_json(&names)?,
                OutputFormat::Table => {
                    print_text(&names.iter().map(|n| format!("{n}\n")).collect::<String>())?
                }
            }
        }
        TopicCommand::Describe { name } => {
            let topic = admin
                .describe_topic(&name)
                .await
                .map_err(|e| for_topic(e, &name))?;
            match ctx.output {
                OutputFormat::Json => print_json(&TopicJson::from(&topic))?,
                OutputFormat::Table => print_text(&render(&topic))?,
            }
        }
        TopicCommand::Delete { name } => {
            admin
                .delete_topic(&name)
                .await
                .map_err(|e| for_topic(e, &name))?;
            match ctx.output {
                OutputFormat::Json => print_json(&serde_json::json!({ "deleted": name }))?,
                OutputFormat::Table => print_text(&format!("deleted topic `{name}`\n"))?,
            }
        }
        TopicCommand::Alter(args) => {
            let set: BTreeMap<String, String> = args.configs.into_iter().collect();
            admin
                .alter_topic_config(&args.name, set.clone(), args.delete.clone())
                .await
                .map_err(|e| for_topic(e, &args.name))?;
            match ctx.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "name": args.name, "set": set, "deleted": args.delete,
                }))?,
                OutputFormat::Table => {
                    let mut changes: Vec<String> =
                        set.iter().map(|(k, v)| format!("set {k}={v}")).collect();
                    changes.extend(args.delete.iter().map(|k| format!("removed {k}")));
                    print_text(&format!(
                        "altered topic `{}`: {}\n",
                        args.name,
                        changes.join(", ")
                    ))?
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(admin: &Admin, args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    if args.partitions < 1 {
        return Err(CliError::new(Exit::Usage, "--partitions must be at least 1").into());
    }
    let rf = match args.replication_factor {
        Some(rf) if rf < 1 => {
            return Err(
                CliError::new(Exit::Usage, "--replication-factor must be at least 1").into(),
            )
        }
        Some(rf) => rf,
        None => {
            let cluster = admin.describe_cluster().await?;
            let active = cluster
                .brokers
                .iter()
                .filter(|b| b.state == weir_client::BrokerState::Active)
                .count();
            active.clamp(1, 3) as i32
        }
    };
    let configs: BTreeMap<String, String> = args.configs.into_iter().collect();
    let topic = admin
        .create_topic(&args.name, args.partitions, rf, configs)
        .await?;
    match ctx.output {
        OutputFormat::Json => print_json(&TopicJson::from(&topic)),
        OutputFormat::Table => print_text(&format!(
            "created topic `{}` with {} partition{}, replication factor {rf}\n",
            topic.name,
            topic.partitions.len(),
            if topic.partitions.len() == 1 { "" } else { "s" },
        )),
    }
}

/// The table form of `topic describe`.
fn render(topic: &TopicDescription) -> String {
    let mut out = format!(
        "Topic: {}  (id {}, {} partitions)\n",
        topic.name,
        topic.id,
        topic.partitions.len()
    );
    if topic.config_entries.is_empty() {
        // A server that predates config sources: its overrides only.
        let configs: BTreeMap<&String, &String> = topic.configs.iter().collect();
        let list: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("Configs: {}\n\n", list.join(", ")));
    } else {
        let mut configs = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
        for e in &topic.config_entries {
            configs.row(vec![e.name.clone(), e.value.clone(), e.source.to_string()]);
        }
        out.push_str(&configs.render());
        out.push('\n');
    }
    let mut table = Table::new(&[
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG START",
        "HIGH WATERMARK",
        "LOG END",
    ]);
    for p in &topic.partitions {
        table.row(vec![
            p.partition.to_string(),
            opt(p.leader),
            p.leader_epoch.to_string(),
            ids(&p.replicas),
            ids(&p.isr),
            offset(p.log_start_offset),
            offset(p.high_watermark),
            offset(p.log_end_offset),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// An offset, `-` when unknown (negative: the leader did not answer).
fn offset(o: i64) -> String {
    if o < 0 {
        "-".to_owned()
    } else {
        o.to_string()
    }
}

/// The JSON form of a topic (its keys are part of the CLI's contract).
#[derive(Debug, Serialize)]
struct TopicJson {
    /// Topic name.
    name: String,
    /// Topic id.
    id: String,
    /// Configuration overrides.
    configs: BTreeMap<String, String>,
    /// Every config with its value in effect and its source (topic, server-default,
    /// built-in).
    config_entries: Vec<weir_client::ConfigEntry>,
    /// Partitions by index.
    partitions: Vec<PartitionJson>,
}

/// One partition.
#[derive(Debug, Serialize)]
struct PartitionJson {
    /// Partition index.
    partition: u32,
    /// Leader's broker id; null when there is none.
    leader: Option<u64>,
    /// Leader epoch.
    leader_epoch: i32,
    /// Replica broker ids, preferred leader first.
    replicas: Vec<u64>,
    /// In-sync replica broker ids.
    isr: Vec<u64>,
    /// First offset still in the log.
    log_start_offset: i64,
    /// Offsets below it are committed and readable.
    high_watermark: i64,
    /// The next offset the leader will assign.
    log_end_offset: i64,
}

impl From<&TopicDescription> for TopicJson {
    fn from(t: &TopicDescription) -> Self {
        Self {
            name: t.name.clone(),
            id: t.id.to_string(),
            configs: t
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            config_entries: t.config_entries.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionJson {
                    partition: p.partition,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    log_end_offset: p.log_end_offset,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert_eq!(parse_key_value("a="), Ok(("a".to_owned(), String::new())));
        assert!(parse_key_value("a").is_err());
        assert!(parse_key_value("=b").is_err());
    }
}
