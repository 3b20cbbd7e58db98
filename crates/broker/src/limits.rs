//! Per-method request size limits below the service-wide one.
//!
//! tonic bounds request messages per service (`max_decoding_message_size`), and the Broker
//! service must accept produce requests of up to [`crate::service::MAX_REQUEST_BYTES`]. Every
//! other unary or server-streaming method of the client API takes a small request, and a large
//! one only costs memory: a Metadata request of 8,000,000 empty topic names decodes into a
//! `Vec<String>` of about 200 MB before the handler runs. [`SmallRequests`] caps the request
//! body of those methods at [`SMALL_REQUEST_BYTES`]; past it, reading the body fails and the
//! call ends with an error status before the message is decoded.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::BoxBody;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

/// Largest request body of the methods [`SmallRequests`] covers.
pub const SMALL_REQUEST_BYTES: usize = 1 << 20;

/// The methods of `weir.broker.v1.Broker` whose requests are small: all but Produce and
/// ProduceStream (a stream's body is every message it carries, so a stream is never capped).
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
];

/// A gRPC service whose small-request methods' bodies are capped at [`SMALL_REQUEST_BYTES`].
#[derive(Debug, Clone)]
pub struct SmallRequests<S> {
    inner: S,
}

impl<S> SmallRequests<S> {
    /// Caps `inner`'s small-request methods.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<Request<BoxBody>> for SmallRequests<S>
where
    S: Service<Request<BoxBody>, Response = Response<BoxBody>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        let req = if SMALL.contains(&req.uri().path()) {
            req.map(|body| {
                tonic::body::boxed(http_body_util::Limited::new(body, SMALL_REQUEST_BYTES))
            })
        } else {
            req
        };
        self.inner.call(req)
    }
}

impl<S: NamedService> NamedService for SmallRequests<S> {
    const NAME: &'static str = S::NAME;
}
