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
