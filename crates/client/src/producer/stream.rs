//! The per-broker produce streams: one pipelined `ProduceStream` to each broker that leads a
//! partition the producer sends to, opened by the sender task when it first needs it.
//!
//! The sender task writes requests into the stream and keeps the batches they carry, in
//! request order, in [`Conn::in_flight`]; a task per stream ([`run_conn`]) reads the answers
//! and forwards them to the sender task, which matches each to the oldest in-flight batch
//! (the broker answers a stream in request order). When the stream ends, for whatever reason,
//! the task reports why (`Event::ConnDown`) and stops.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use weir_proto::broker::v1 as pb;

use super::sender::{Batch, Event};
use crate::error::Error;

/// One ProduceStream to a broker.
pub(super) struct Conn {
    /// Tells this stream from earlier ones to the same broker: events carry it, and those of
    /// a stream already given up on are ignored.
    pub(super) id: u64,
    /// The request side of the stream; sending fails once the stream task has ended.
    pub(super) tx: mpsc::UnboundedSender<pb::ProduceRequest>,
    /// Batches written to the stream and not yet answered, in request order: the next answer
    /// is the front one's.
    pub(super) in_flight: VecDeque<Batch>,
    /// The [`run_conn`] task reading the answers; aborted when the stream is given up.
    pub(super) task: JoinHandle<()>,
}

/// One broker's ProduceStream: forwards answers (in request order) to the sender task.
pub(super) async fn run_conn(
    id: u64,
    mut client: pb::broker_client::BrokerClient<tonic::transport::Channel>,
    rx: mpsc::UnboundedReceiver<pb::ProduceRequest>,
    events: mpsc::UnboundedSender<Event>,
) {
    let error = match client
        .produce_stream(UnboundedReceiverStream::new(rx))
        .await
    {
        Err(status) => Error::from(status),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(answer)) => {
                        if events.send(Event::Answer { conn: id, answer }).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        break Error::Unavailable("the broker closed the produce stream".into())
                    }
                    Err(status) => break Error::from(status),
                }
            }
        }
    };
    let _ = events.send(Event::ConnDown { conn: id, error });
}
