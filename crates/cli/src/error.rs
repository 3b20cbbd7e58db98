//! Failures as the user sees them: one line on stderr and a documented exit code (listed in
//! `weir --help`). Commands return `anyhow` errors; [`describe`] classifies them once, here,
//! so every command reports "cannot reach the cluster" or "unknown topic" the same way.

use std::fmt;
use std::process::ExitCode;

use weir_proto::common::v1::ErrorCode;

/// The exit codes `weir` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The cluster refused or failed the request, or some records were not acknowledged.
    Failure = 1,
    /// Bad usage (clap uses 2 for its own usage errors too).
    Usage = 2,
    /// No bootstrap address answered.
    Unreachable = 3,
    /// The topic or partition does not exist.
    NotFound = 4,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// An error the CLI has already put into words, with its exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// The one-line message (without the leading "error: ").
    pub message: String,
}

impl CliError {
    /// An error with its exit code and message.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    /// The topic does not exist.
    pub fn unknown_topic(topic: &str) -> Self {
        Self::new(Exit::NotFound, format!("unknown topic `{topic}`"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Converts a client error about `topic`, naming the topic when the cluster does not know it.
pub fn for_topic(err: weir_client::Error, topic: &str) -> anyhow::Error {
    if err.code() == Some(ErrorCode::UnknownTopicOrPartition) {
        CliError::unknown_topic(topic).into()
    } else {
        err.into()
    }
}

/// The message of a client error without its variant's prefix, for embedding in a sentence.
pub fn bare(err: &weir_client::Error) -> String {
    use weir_client::Error as E;
    match err {
        E::Server { message, .. } => message.clone(),
        E::Unavailable(m)
        | E::Timeout(m)
        | E::InvalidConfig(m)
        | E::InvalidInput(m)
        | E::Corrupt(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The exit code and one-line message for an error that ended a command.
pub fn describe(err: &anyhow::Error, bootstrap: &str) -> (Exit, String) {
    use weir_client::Error as E;
    if let Some(e) = err.downcast_ref::<CliError>() {
        return (e.exit, e.message.clone());
    }
    for cause in err.chain() {
        let Some(e) = cause.downcast_ref::<weir_client::Error>() else {
            continue;
        };
        return match e {
            E::Unavailable(m) => (
                Exit::Unreachable,
                format!("cannot reach the cluster at {bootstrap} ({})", one_line(m)),
            ),
            E::Server { code, message } if *code == ErrorCode::UnknownTopicOrPartition => {
                (Exit::NotFound, one_line(message))
            }
            E::Server { code, message } => (
                Exit::Failure,
                format!("{} [{}]", one_line(message), code.as_str_name()),
            ),
            E::InvalidConfig(m) | E::InvalidInput(m) => (Exit::Usage, one_line(m)),
            other => (Exit::Failure, one_line(&other.to_string())),
        };
    }
    (Exit::Failure, one_line(&format!("{err:#}")))
}

/// Keeps an error on one line: multi-line causes (tonic's, for one) are joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_the_bootstrap_address() {
        let err = anyhow::Error::from(weir_client::Error::Unavailable("connection refused".into()));
        let (exit, message) = describe(&err, "127.0.0.1:1");
        assert_eq!(exit, Exit::Unreachable);
        assert_eq!(
            message,
            "cannot reach the cluster at 127.0.0.1:1 (connection refused)"
        );
    }

    #[test]
    fn unknown_topic_names_the_topic() {
        let err = for_topic(
            weir_client::Error::Server {
                code: ErrorCode::UnknownTopicOrPartition,
                message: "no topic".into(),
            },
            "x",
        );
        assert_eq!(
            describe(&err, "b"),
            (Exit::NotFound, "unknown topic `x`".to_owned())
        );
    }

    #[test]
    fn server_errors_carry_their_code() {
        let err = anyhow::Error::from(weir_client::Error::Server {
            code: ErrorCode::TopicAlreadyExists,
            message: "topic `x` already exists".into(),
        });
        assert_eq!(
            describe(&err, "b"),
            (
                Exit::Failure,
                "topic `x` already exists [TOPIC_ALREADY_EXISTS]".to_owned()
            )
        );
    }
}
