//! What brokers ask of the controller: registration (bounded: every Metadata answer carries
//! every broker), controlled shutdown and blocks of producer ids. (ISR changes are one write, in the service.)

use weir_common::sync::MutexExt;

use super::Controller;
use crate::command::{Command, MetaError};
use crate::state::PRODUCER_ID_BLOCK;
use crate::types::NodeId;

/// Longest broker address (`host:port`) or rack name a broker may register: every Metadata
/// answer carries them, so they are bounded (a 4 MB address once made every answer exceed its
/// limit, for good).
pub const MAX_REGISTRATION_FIELD: usize = 255;

/// Most brokers the cluster registers; a registration of a new id past it is refused, so
/// registrations of made-up ids cannot grow every Metadata answer without end (an operator
/// removes a gone broker with UnregisterBroker).
pub const MAX_BROKERS: usize = 1000;

/// Whether `address` is a `host:port` and `rack` a name, both within
/// [`MAX_REGISTRATION_FIELD`] bytes of printable ASCII.
pub(super) fn check_registration(address: &str, rack: &str) -> Result<(), MetaError> {
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    let invalid = |why: String| Err(MetaError::InvalidRequest(why));
    if address.is_empty() || address.len() > MAX_REGISTRATION_FIELD || !printable(address) {
        return invalid(format!(
            "a broker address is host:port, at most {MAX_REGISTRATION_FIELD} printable bytes"
        ));
    }
    let port = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok());
    if port.is_none_or(|p| p == 0) {
        return invalid(format!("broker address `{address}` is not host:port"));
    }
    if rack.len() > MAX_REGISTRATION_FIELD || !printable(rack) {
        return invalid(format!(
            "a rack name is at most {MAX_REGISTRATION_FIELD} printable bytes"
        ));
    }
    Ok(())
}

impl Controller {
    /// Registers broker `id` (a new one, or a new incarnation of a known one); returns its
    /// broker epoch.
    pub(super) async fn register_broker(
        &self,
        id: NodeId,
        address: String,
        rack: String,
        incarnation: u64,
    ) -> Result<u64, MetaError> {
        check_registration(&address, &rack)?;
        let state = self.state.current();
        if !state.brokers.contains_key(&id) && state.brokers.len() >= MAX_BROKERS {
            return Err(MetaError::InvalidRequest(format!(
                "the cluster already has {MAX_BROKERS} registered brokers"
            )));
        }
        let command = Command::RegisterBroker {
            id,
            address,
            rack: (!rack.is_empty()).then_some(rack),
            incarnation,
        };
        let version = self.write(command).await?;
        self.liveness.locked().registered(id);
        self.touch(id);
        Ok(self
            .state
            .current()
            .brokers
            .get(&id)
            .map_or(version, |b| b.epoch))
    }

    /// Fences broker `id` at its request, before it stops: its partitions move now, not after
    /// a session timeout.
    pub(super) async fn controlled_shutdown(
        &self,
        id: NodeId,
        incarnation: u64,
    ) -> Result<(), MetaError> {
        let known = self
            .state
            .current()
            .brokers
            .get(&id)
            .is_some_and(|b| b.incarnation == incarnation);
        if !known {
            return Err(MetaError::InvalidRequest(format!(
                "broker {id} is not registered with incarnation {incarnation}"
            )));
        }
        tracing::info!(broker = id, "controlled shutdown: fencing the broker");
        self.write(Command::FenceBroker { id }).await?;
        self.liveness.locked().shutting_down(id, incarnation);
        Ok(())
    }

    /// Hands broker `id` (registered as `broker_epoch`) the next block of producer ids; returns
    /// the block's first id and its size.
    pub(super) async fn allocate_producer_ids(
        &self,
        id: NodeId,
        broker_epoch: u64,
    ) -> Result<(i64, i64), MetaError> {
        let result = self
            .write_for_result(Command::AllocateProducerIds {
                broker: id,
                broker_epoch,
            })
            .await?;
        let first = result.first_producer_id;
        result.into_result()?;
        let first = first.ok_or_else(|| {
            MetaError::Internal("the allocation was applied without a block".into())
        })?;
        tracing::debug!(broker = id, first, "allocated a block of producer ids");
        Ok((first, PRODUCER_ID_BLOCK))
    }

    /// Removes the registration of broker `id`, which must be fenced (gone, or not yet caught
    /// up); a live one registers again at its next heartbeat.
    pub(super) async fn unregister_broker(&self, id: NodeId) -> Result<(), MetaError> {
        tracing::warn!(
            broker = id,
            "unregistering the broker at an operator's request"
        );
        self.write(Command::UnregisterBroker { id }).await?;
        self.liveness.locked().forget(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_registration;

    #[test]
    fn registrations_are_bounded_host_ports_and_racks() {
        assert!(check_registration("127.0.0.1:9700", "").is_ok());
        assert!(check_registration("broker-1.example:9700", "rack-a").is_ok());
        assert!(check_registration("[::1]:9700", "").is_ok());
        let long = format!("{}:1", "a".repeat(300));
        for bad in [
            "",
            "no-port",
            ":9700",
            "h:0",
            "h:99999",
            "h :1",
            long.as_str(),
        ] {
            assert!(check_registration(bad, "").is_err(), "{bad:?}");
        }
        assert!(check_registration("h:1", &"r".repeat(256)).is_err());
        assert!(check_registration("h:1", "a rack").is_err());
    }
}
