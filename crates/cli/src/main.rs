//! `weir`: the command-line tool for a Weir cluster.
//!
//! One module per command group — [`cluster`], [`topic`], [`produce`], [`consume`], [`bench`](mod@bench) — each with
//! its clap arguments and an async `run`; [`output`] renders aligned tables and JSON, and
//! [`error`] turns every failure into one line on stderr and a documented exit code. The tool
//! speaks to the cluster only through the `weir-client` crate.

mod bench;
mod cluster;
mod consume;
mod error;
mod output;
mod produce;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir_client::ClientConfig;

use crate::error::{CliError, Exit};
use crate::output::OutputFormat;

/// Shown under `weir --help`: the exit codes scripts can rely on, and a first tour.
const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  the cluster refused or failed the request (the error line says why), or some produced
     records were not acknowledged
  2  bad usage: an unknown flag, a missing or malformed argument
  3  cannot reach the cluster at the --bootstrap address(es)
  4  unknown topic or partition

Examples:
  weir cluster describe
  weir topic create orders --partitions 6 --replication-factor 3
  seq 1 100 | weir produce orders
  weir consume orders --offset earliest --idle-timeout-ms 2000
  WEIR_BOOTSTRAP=10.0.0.1:9700,10.0.0.2:9700 weir topic list --output json";

/// The `weir` command line.
#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "Administer a Weir cluster, and produce and consume records from the terminal",
    after_help = AFTER_HELP,
    propagate_version = true
)]
struct Cli {
    /// Broker addresses to start from, comma-separated (dead ones are skipped).
    #[arg(
        long,
        global = true,
        env = "WEIR_BOOTSTRAP",
        default_value = "127.0.0.1:9700",
        value_name = "HOST:PORT[,..]"
    )]
    bootstrap: String,
    /// How to print results: aligned tables for a person, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// The command to run.
    #[command(subcommand)]
    command: Command,
}

/// The command groups.
#[derive(Debug, Subcommand)]
enum Command {
    /// Describe the cluster: brokers, controller leader, metadata quorum.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Consume records and print them on standard output.
    Consume(consume::ConsumeArgs),
    /// Measure produce, consume and end-to-end speed through the client.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// What every command needs: where the cluster is and how to print.
#[derive(Debug, Clone)]
pub struct Context {
    /// The --bootstrap value as the user wrote it, for error messages.
    pub bootstrap: String,
    /// The client configuration built from it.
    pub client: ClientConfig,
    /// Table or JSON.
    pub output: OutputFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    // clap exits by itself on bad usage (code 2) and after --help/--version (code 0).
    let cli = Cli::parse();
    let bootstrap = cli.bootstrap.clone();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            let (exit, message) = error::describe(&err, &bootstrap);
            eprintln!("error: {message}");
            exit.code()
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let addresses = ClientConfig::parse_bootstrap(&cli.bootstrap).map_err(|e| {
        CliError::new(
            Exit::Usage,
            format!(
                "invalid --bootstrap `{}`: {}",
                cli.bootstrap,
                error::bare(&e)
            ),
        )
    })?;
    // The client's connect timeout (3 s) keeps a dead address from stalling the CLI.
    let ctx = Context {
        bootstrap: cli.bootstrap,
        client: ClientConfig::new(addresses),
        output: cli.output,
    };
    match cli.command {
        Command::Cluster(cmd) => cluster::run(cmd, &ctx).await,
        Command::Topic(cmd) => topic::run(cmd, &ctx).await,
        Command::Produce(args) => produce::run(args, &ctx).await,
        Command::Consume(args) => consume::run(args, &ctx).await,
        Command::Bench(cmd) => bench::run(cmd, &ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_examples_in_its_help() {
        fn check(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            let has_sub = cmd.get_subcommands().next().is_some();
            if !has_sub {
                let after = cmd
                    .get_after_help()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                assert!(
                    after.contains("Examples:"),
                    "`{path} --help` has no examples"
                );
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    check(sub, &path);
                }
            }
        }
        check(&Cli::command(), "");
    }
}
