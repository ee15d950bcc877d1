//! host-gw: no encapsulation, a route to each peer's subnet via the peer's
//! public IP on the underlay. Works only when all nodes share one L2
//! segment; a peer behind a router gets a clear per-peer error instead of a
//! route that would blackhole.

use async_trait::async_trait;
use lease_store::{Lease, NetworkConfig};

use super::converge::{converge, on_same_l2, Desired};
use super::ownership::Scope;
use super::{Backend, BackendError, LocalNode, Peer, PeerError, Prepared, ReconcileReport};
use crate::model::Route;
use crate::netlink::KernelRef;
use crate::node::mtu::overlay_mtu;
use crate::reconcile::State;

pub struct HostGwBackend {
    nl: KernelRef,
    node: Option<LocalNode>,
    /// The cluster network and our subnet: gatewayed routes to peer
    /// subnets inside it are ours whoever made them (Go flanneld).
    scope: Scope,
}

impl HostGwBackend {
    pub fn new(nl: impl Into<KernelRef>) -> Self {
        HostGwBackend {
            nl: nl.into(),
            node: None,
            scope: Scope::default(),
        }
    }
}

#[async_trait]
impl Backend for HostGwBackend {
    async fn prepare(
        &mut self,
        node: &LocalNode,
        config: &NetworkConfig,
    ) -> Result<Prepared, BackendError> {
        self.node = Some(node.clone());
        self.scope.network = config.network;
        Ok(Prepared {
            backend_type: "host-gw".into(),
            backend_data: None,
            // No encapsulation: the underlay MTU, under the same floor.
            mtu: overlay_mtu(node.iface_mtu, 0)?,
        })
    }

    async fn attach(&mut self, lease: &Lease) -> Result<(), BackendError> {
        // host-gw puts nothing on a device: pods route through the bridge.
        self.scope.own = lease.subnet;
        Ok(())
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        let node = self
            .node
            .as_ref()
            .ok_or(BackendError::NotPrepared { backend: "host-gw" })?;
        let mut desired = Desired::default();
        let mut errors = Vec::new();
        for peer in peers {
            if peer.public_ip == node.public_ip {
                continue;
            }
            if peer.backend_type != "host-gw" {
                errors.push(peer.other_backend("host-gw"));
                continue;
            }
            if !on_same_l2(&*self.nl, peer.public_ip, node.iface_index).await? {
                errors.push(PeerError::NotOnSameL2 {
                    subnet: peer.subnet,
                    public_ip: peer.public_ip,
                    iface: node.iface_name.clone(),
                });
                continue;
            }
            let route = Route {
                dst: peer.subnet,
                gateway: peer.public_ip,
                oif: node.iface_index,
                onlink: false,
                encap: None,
            };
            desired.add_peer(
                peer.subnet,
                State {
                    routes: vec![route],
                    ..State::default()
                },
            );
        }
        let out = converge(&*self.nl, &desired, self.scope).await?;
        errors.extend(out.errors);
        Ok(ReconcileReport {
            changes: out.changes,
            errors,
            peers: out.peers_ok,
            device_recreated: false,
        })
    }
}
