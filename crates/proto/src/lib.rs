//! Weir's gRPC contract, generated from the `proto/*.proto` files at the workspace root.
//!
//! `proto/` is the public contract: clients in any language generate their stubs from the same
//! files. Each package of the contract is one module here, named after its protobuf package.

#![allow(missing_docs)] // generated code; the documentation lives in the .proto files.

pub mod channel;
pub mod listen;

/// Shared wire types: the error codes every RPC answers with.
pub mod common {
    /// Version 1 of the shared types (`weir.common.v1`).
    pub mod v1 {
        tonic::include_proto!("weir.common.v1");

        impl ErrorCode {
            /// Whether a request that failed with this code is worth another try, after a
            /// metadata refresh where [`ErrorCode::is_stale_metadata`] says so. The one list
            /// every client (the Rust client, the CLI, the examples) uses. As in Kafka: the
            /// leader moved or is unknown (NOT_LEADER_OR_FOLLOWER, the leader-epoch errors, a
            /// topic not yet known to every broker), the ISR is too small for now, the request
            /// timed out, the controller moved, or the replica's disk failed (another replica
            /// will lead).
            pub fn is_retriable(self) -> bool {
                matches!(
                    self,
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::UnknownTopicOrPartition
                        | ErrorCode::RequestTimedOut
                        | ErrorCode::NotEnoughReplicas
                        | ErrorCode::NotEnoughReplicasAfterAppend
                        | ErrorCode::NotController
                        | ErrorCode::KafkaStorageError
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::UnknownLeaderEpoch
                )
            }

            /// Whether the client's view of leaders is out of date: refresh metadata before the
            /// retry.
            pub fn is_stale_metadata(self) -> bool {
                matches!(
                    self,
                    ErrorCode::NotLeaderOrFollower
                        | ErrorCode::UnknownTopicOrPartition
                        | ErrorCode::FencedLeaderEpoch
                        | ErrorCode::UnknownLeaderEpoch
                        | ErrorCode::KafkaStorageError
                )
            }

            /// [`ErrorCode::is_retriable`] for a raw wire code; unknown codes are not.
            pub fn is_retriable_code(code: i32) -> bool {
                ErrorCode::try_from(code).is_ok_and(ErrorCode::is_retriable)
            }
        }

        impl Error {
            /// An error with `code` and a message a person can act on.
            pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
                Error {
                    code: code as i32,
                    message: message.into(),
                }
            }
        }

        /// A response with an `error` field: any refusal can be answered with one, so the
        /// services build error answers in one way (and routing code can answer any request).
        pub trait WithError: Default {
            /// The response carrying `error`, every other field at its "no value" (-1 for
            /// offsets and timestamps, empty otherwise).
            fn with_error(error: Error) -> Self;
        }

        /// A response that names the partition's leader with NOT_LEADER_OR_FOLLOWER, so the
        /// client can go there without a metadata round trip.
        pub trait WithLeaderHint: WithError {
            /// Sets the leader's client address.
            fn set_leader_address(&mut self, address: String);
        }
    }
}

/// Raft between the controllers of the metadata quorum: openraft messages carried as bincode.
pub mod raft {
    /// Version 1 of the controller Raft service (`weir.raft.v1`).
    pub mod v1 {
        tonic::include_proto!("weir.raft.v1");
    }
}

/// The controller service: broker lifecycle, ISR changes and administration.
pub mod controller {
    /// Version 1 (`weir.controller.v1`).
    pub mod v1 {
        tonic::include_proto!("weir.controller.v1");
    }
}

/// The broker's client API (produce, fetch, offsets, metadata, admin) and replication API.
pub mod broker {
    /// Version 1 (`weir.broker.v1`).
    pub mod v1 {
        tonic::include_proto!("weir.broker.v1");
    }
}

/// Implements [`common::v1::WithError`] for responses whose other fields all default to their
/// "no value" (an empty list, 0, false).
macro_rules! with_error {
    ($($t:ty),* $(,)?) => {$(
        // Some responses have no field but `error`; the macro treats them all alike.
        #[allow(clippy::needless_update)]
        impl common::v1::WithError for $t {
            fn with_error(error: common::v1::Error) -> Self {
                Self { error: Some(error), ..Default::default() }
            }
        }
    )*};
}

/// Implements [`common::v1::WithLeaderHint`] for responses with a `leader_address` field.
macro_rules! with_leader_hint {
    ($($t:ty),* $(,)?) => {$(
        impl common::v1::WithLeaderHint for $t {
            fn set_leader_address(&mut self, address: String) {
                self.leader_address = address;
            }
        }
    )*};
}

with_error!(
    controller::v1::RegisterBrokerResponse,
    controller::v1::BrokerHeartbeatResponse,
    controller::v1::ControlledShutdownResponse,
    controller::v1::AlterPartitionResponse,
    controller::v1::JoinQuorumResponse,
    controller::v1::TriggerElectionResponse,
    controller::v1::CreateTopicResponse,
    controller::v1::DeleteTopicResponse,
    controller::v1::AlterTopicConfigResponse,
    controller::v1::DescribeClusterResponse,
    controller::v1::DescribeTopicsResponse,
    controller::v1::UnregisterBrokerResponse,
    controller::v1::AllocateProducerIdsResponse,
    broker::v1::InitProducerIdResponse,
    broker::v1::MetadataResponse,
    broker::v1::FetchResponse,
    broker::v1::PartitionOffsetsResponse,
    broker::v1::ReplicaFetchResponse,
);

with_leader_hint!(
    broker::v1::ProduceResponse,
    broker::v1::FetchResponse,
    broker::v1::ListOffsetsResponse,
);

impl common::v1::WithError for broker::v1::ProduceResponse {
    fn with_error(error: common::v1::Error) -> Self {
        Self {
            error: Some(error),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            leader_address: String::new(),
        }
    }
}

impl common::v1::WithError for broker::v1::ListOffsetsResponse {
    fn with_error(error: common::v1::Error) -> Self {
        Self {
            error: Some(error),
            offset: -1,
            timestamp: -1,
            leader_address: String::new(),
        }
    }
}

impl common::v1::WithError for broker::v1::OffsetForLeaderEpochResponse {
    fn with_error(error: common::v1::Error) -> Self {
        Self {
            error: Some(error),
            leader_epoch: -1,
            end_offset: -1,
        }
    }
}
