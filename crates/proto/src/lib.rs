//! Weir's gRPC contract, generated from the `proto/*.proto` files at the workspace root.
//!
//! `proto/` is the public contract: clients in any language generate their stubs from the same
//! files. Each package of the contract is one module here, named after its protobuf package.

#![allow(missing_docs)] // generated code; the documentation lives in the .proto files.

/// Shared wire types: the error codes every RPC answers with.
pub mod common {
    /// Version 1 of the shared types (`weir.common.v1`).
    pub mod v1 {
        tonic::include_proto!("weir.common.v1");
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
