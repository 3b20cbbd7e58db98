//! The client's one error type.

use weir_proto::common::v1::{Error as WireError, ErrorCode};

/// Everything a client call can fail with.
///
/// ```
/// use weir_client::{Error, ErrorCode};
///
/// let err = Error::Server {
///     code: ErrorCode::NotLeaderOrFollower,
///     message: "broker 2 leads events-0".into(),
/// };
/// assert_eq!(err.code(), Some(ErrorCode::NotLeaderOrFollower));
/// assert!(err.is_retriable());
/// assert!(!Error::InvalidInput("partition 7 of 3".into()).is_retriable());
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error code; `message` is the server's explanation.
    #[error("{}: {message}", code.as_str_name())]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// No bootstrap address or broker could be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A request or delivery did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument is invalid (for example a partition out of range).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A fetched batch failed to decode.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// The producer or consumer was shut down.
    #[error("the client is closed")]
    Closed,
}

/// The client's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The server's error code, for [`Error::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying (after refreshing metadata) may succeed: leadership moves, metadata
    /// lag, timeouts, too few in-sync replicas, no controller leader, unreachable brokers.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Server { code, .. } => code.is_retriable(),
            Error::Unavailable(_) | Error::Timeout(_) => true,
            _ => false,
        }
    }

    /// A server error from its code and message.
    pub(crate) fn server(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Server {
            code,
            message: message.into(),
        }
    }

    /// Whether metadata should be refreshed before retrying.
    pub(crate) fn needs_metadata(&self) -> bool {
        self.code().is_some_and(ErrorCode::is_stale_metadata)
            || matches!(self, Error::Unavailable(_) | Error::Timeout(_))
    }
}

/// `Ok` for an absent error or NONE, else [`Error::Server`].
pub(crate) fn check(error: Option<WireError>) -> Result<()> {
    match error {
        None => Ok(()),
        Some(e) => {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::UnknownServerError);
            if code == ErrorCode::None {
                Ok(())
            } else {
                Err(Error::Server {
                    code,
                    message: e.message,
                })
            }
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = format!("{}: {}", status.code(), status.message());
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
                Error::Unavailable(message)
            }
            Code::DeadlineExceeded => Error::Timeout(message),
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput(message),
            _ => Error::Server {
                code: ErrorCode::UnknownServerError,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_codes() {
        for code in [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::RequestTimedOut,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::NotEnoughReplicasAfterAppend,
            ErrorCode::NotController,
            ErrorCode::KafkaStorageError,
            // A leader change the client has not seen yet: refresh metadata and retry.
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch,
        ] {
            assert!(Error::server(code, "x").is_retriable(), "{code:?}");
        }
        for code in [
            ErrorCode::OffsetOutOfRange,
            ErrorCode::RecordTooLarge,
            ErrorCode::TopicAlreadyExists,
            ErrorCode::UnknownServerError,
        ] {
            assert!(!Error::server(code, "x").is_retriable(), "{code:?}");
        }
        assert!(Error::Unavailable("x".into()).is_retriable());
        assert!(Error::Timeout("x".into()).is_retriable());
        assert!(!Error::Closed.is_retriable());
        assert!(!Error::Corrupt("x".into()).is_retriable());
    }

    #[test]
    fn wire_errors() {
        assert_eq!(check(None), Ok(()));
        let e = check(Some(WireError {
            code: ErrorCode::UnknownTopicOrPartition as i32,
            message: "unknown topic `x`".into(),
        }))
        .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
        assert_eq!(
            e.to_string(),
            "UNKNOWN_TOPIC_OR_PARTITION: unknown topic `x`"
        );
    }
}
