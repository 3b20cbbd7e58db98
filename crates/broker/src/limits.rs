//! Per-method request size limits below the service-wide one.
//!
//! tonic bounds request messages per service (`max_decoding_message_size`), and the Broker
//! service must accept produce requests of up to [`crate::service::MAX_REQUEST_BYTES`]. Every
//! other unary or server-streaming method of the client API takes a small request, and a large
//! one only costs memory: a Metadata request of 8,000,000 empty topic names decodes into a
//! `Vec<String>` of about 200 MB before the handler runs. [`Limited`] caps the request
//! body of those methods at [`SMALL_REQUEST_BYTES`]; past it, reading the body fails and the
//! call ends with an error status before the message is decoded.
//!
//! The same wrapper, [`Limited`], hands each budgeted answer stream (Fetch, ReplicaFetch) a
//! [`Handoff`] and carries its answers' budget shares on the chunks that hold them until HTTP/2
//! has written them ([`crate::budget`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::BoxBody;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

use crate::budget::{self, Handoff};

/// Largest request body of the methods [`Limited`] covers.
pub const SMALL_REQUEST_BYTES: usize = 1 << 20;

/// The methods whose requests are small: all of `weir.broker.v1.Broker` but Produce and
/// ProduceStream (a stream's body is every message it carries, so a stream is never capped),
/// and Replication's OffsetForLeaderEpoch.
const SMALL: &[&str] = &[
    "/weir.broker.v1.Broker/Metadata",
    "/weir.broker.v1.Broker/Fetch",
    "/weir.broker.v1.Broker/ListOffsets",
    "/weir.broker.v1.Broker/CreateTopic",
    "/weir.broker.v1.Broker/DeleteTopic",
    "/weir.broker.v1.Broker/AlterTopicConfig",
    "/weir.broker.v1.Broker/DescribeCluster",
    "/weir.broker.v1.Broker/DescribeTopics",
    "/weir.broker.v1.Broker/PartitionOffsets",
    "/weir.broker.v1.Broker/InitProducerId",
    "/weir.broker.v1.Broker/UnregisterBroker",
    "/weir.broker.v1.Replication/OffsetForLeaderEpoch",
];

/// The methods whose answers come from a budget ([`crate::budget`]): their streams get a
/// [`Handoff`].
const BUDGETED: &[&str] = &[
    "/weir.broker.v1.Broker/Fetch",
    "/weir.broker.v1.Replication/ReplicaFetch",
];

/// A gRPC service with this module's per-method limits: small-request methods' bodies capped
/// at [`SMALL_REQUEST_BYTES`], budgeted methods' answers holding their shares until written.
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
}

impl<S> Limited<S> {
    /// `inner` with the limits.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<BoxBody>> for Limited<S>
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = futures::future::Either<
        S::Future,
        Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<BoxBody>) -> Self::Future {
        let path = req.uri().path();
        let budgeted = BUDGETED.contains(&path);
        if SMALL.contains(&path) {
            req = req.map(|body| {
                tonic::body::boxed(http_body_util::Limited::new(body, SMALL_REQUEST_BYTES))
            });
        }
        if !budgeted {
            return futures::future::Either::Left(self.inner.call(req));
        }
        let handoff = Handoff::default();
        req.extensions_mut().insert(handoff.clone());
        let answer = self.inner.call(req);
        futures::future::Either::Right(Box::pin(async move {
            Ok(answer.await?.map(|body| budget::carrying(body, handoff)))
        }))
    }
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}
