//! Admin requests (create, delete and alter topics; describe the cluster and topics) are the
//! controller quorum's: a broker forwards them as they are.

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Response, Status};
use weir_proto::controller::v1::controller_client::ControllerClient;

use super::BrokerService;

/// How long one controller may take to answer a forwarded admin request.
const ADMIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

impl BrokerService {
    /// Forwards an admin request to the controller quorum: to each controller in turn (any of
    /// them forwards to the leader), each attempt bounded by [`ADMIN_ATTEMPT_TIMEOUT`], moving
    /// on when one is unreachable or silent. Answers (errors included) come back as they are.
    pub(super) async fn to_controller<Req, Resp, F, Fut>(
        &self,
        req: Req,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(ControllerClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut last = Status::unavailable("no controller configured");
        for _ in 0..self.manager.controller_count().max(1) {
            let Some(client) = self.manager.controller() else {
                break;
            };
            match tokio::time::timeout(ADMIN_ATTEMPT_TIMEOUT, call(client, req.clone())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(status))
                    if matches!(
                        status.code(),
                        Code::Unavailable
                            | Code::Unknown
                            | Code::Cancelled
                            | Code::DeadlineExceeded
                    ) =>
                {
                    last = status
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => last = Status::deadline_exceeded("a controller did not answer in time"),
            }
        }
        Err(last)
    }
}
