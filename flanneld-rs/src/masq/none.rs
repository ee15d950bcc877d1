//! The driver that installs nothing.

use ipnet::Ipv4Net;

use super::{MasqError, Masquerade};

#[derive(Debug, Default, Clone, Copy)]
pub struct NoMasq;

impl Masquerade for NoMasq {
    fn apply(&self, _cluster_networks: &[Ipv4Net], _pod_subnet: Ipv4Net) -> Result<(), MasqError> {
        Ok(())
    }

    fn remove(&self) -> Result<(), MasqError> {
        Ok(())
    }
}
