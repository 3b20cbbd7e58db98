//! The Rust client for Weir: a batching producer, a consumer with per-partition fetch streams,
//! and an admin client, over the broker's gRPC contract (`proto/broker.proto`).
//!
//! * [`Admin`]: create, describe, list, alter and delete topics; describe the cluster.
//! * [`Producer`]: per-partition batches encoded once as Kafka RecordBatch v2, one pipelined
//!   `ProduceStream` per leader, retries on leadership moves, `buffer_memory` back-pressure.
//! * [`Consumer`]: assign partitions from an [`Offset`] and read one merged stream of records.
//!
//! ```no_run
//! # async fn example() -> weir_client::Result<()> {
//! use std::collections::BTreeMap;
//! use futures::StreamExt;
//! use weir_client::*;
//!
//! let client = ClientConfig::new(ClientConfig::parse_bootstrap("127.0.0.1:9700")?);
//! let admin = Admin::connect(client.clone()).await?;
//! admin.create_topic("events", 3, 1, BTreeMap::new()).await?;
//!
//! let producer = Producer::connect(client.clone(), ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::new("events", "hello").key("k")).await?;
//! producer.flush().await?;
//! let stored = delivery.await?;
//!
//! let mut consumer = Consumer::connect(client, ConsumerConfig::default()).await?;
//! consumer.assign("events", stored.partition, Offset::At(stored.offset)).await?;
//! let record = consumer.stream().next().await.expect("a record")?;
//! assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod config;
pub mod consumer;
pub mod error;
mod metadata;
pub mod partitioner;
pub mod producer;
mod wire;

pub use admin::{
    Admin, BrokerDescription, BrokerState, ClusterDescription, ConfigEntry, ConfigSource,
    PartitionDescription, QuorumMember, TopicDescription,
};
pub use config::{Acks, ClientConfig, ConsumerConfig, ProducerConfig};
pub use consumer::{Consumer, ConsumerRecord, Offset};
pub use error::{Error, Result};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{DeliveryFuture, Producer, ProducerRecord, RecordMetadata};
pub use weir_proto::common::v1::ErrorCode;
pub use weir_storage::Compression;
