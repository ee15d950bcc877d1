//! Kernel VXLAN or Geneve in metadata (external) mode: one device that
//! takes every VNI on its UDP port, and per peer a permanent neighbour
//! (peer .0 -> peer VTEP MAC, the inner frame's destination) plus an onlink
//! route to the peer's subnet carrying `encap ip id <VNI> dst <peer>`. The
//! same reconcile rules as FDB-mode VXLAN; no FDB entries. When the kernel
//! has no module for the device kind, `prepare` fails with one line, or runs
//! the userspace datapath when the Backend asks for `"Fallback": "userspace"`.

pub mod device;
pub mod entries;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use lease_store::Lease;

use super::devices::{self, OwnedDevice};
use super::{
    tunnel, Backend, BackendError, LocalNode, Peer, Prepared, ReconcileReport, TunnelSpec,
};
use crate::netlink::KernelRef;
pub use device::{DeviceSpec, GENEVE_DEVICE, VXLAN_DEVICE};

/// The metadata-mode backend for `spec` on `node`.
pub fn new(
    netlink: KernelRef,
    spec: TunnelSpec,
    node: &LocalNode,
) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(MetadataBackend::new(netlink, spec, node)?))
}

/// What making sure the device exists came to.
enum Ensured {
    /// The device's index.
    Adopted(u32),
    Created(u32),
    /// The kernel cannot create this kind of link (the errno).
    NoModule(i32),
}

pub struct MetadataBackend {
    nl: KernelRef,
    spec: TunnelSpec,
    node: LocalNode,
    dev: DeviceSpec,
    index: Option<u32>,
    lease: Option<Ipv4Net>,
}

impl MetadataBackend {
    /// The backend for `spec` on `node`; fails when the node has no
    /// address of the underlay's family or the MTU rule refuses it.
    pub fn new(
        nl: impl Into<KernelRef>,
        spec: TunnelSpec,
        node: &LocalNode,
    ) -> Result<Self, BackendError> {
        Ok(MetadataBackend {
            nl: nl.into(),
            dev: DeviceSpec::new(&spec, node)?,
            spec,
            node: node.clone(),
            index: None,
            lease: None,
        })
    }

    /// The device as wanted.
    pub fn device(&self) -> &DeviceSpec {
        &self.dev
    }

    /// Removes the devices this one displaces and creates or adopts it:
    /// the errno when the kernel has no module for its kind (the caller
    /// decides: fail, or run the userspace datapath: `backend::open`).
    pub async fn probe(&mut self) -> Result<Option<i32>, BackendError> {
        let me = OwnedDevice::Metadata {
            encap: self.spec.encap,
            vni: self.spec.vni,
        };
        devices::remove_conflicting(&*self.nl, me).await?;
        Ok(match self.ensure_device().await? {
            Ensured::NoModule(errno) => Some(errno),
            Ensured::Adopted(_) | Ensured::Created(_) => None,
        })
    }

    fn what(&self) -> &'static str {
        self.spec.encap.backend_type()
    }

    async fn ensure_device(&mut self) -> Result<Ensured, BackendError> {
        let dev = self.dev.clone();
        if let Some(index) =
            tunnel::adopt_or_remove(&*self.nl, dev.name, dev.mtu, |l| dev.check_adoptable(l))
                .await?
        {
            self.index = Some(index);
            return Ok(Ensured::Adopted(index));
        }
        let what = format!(
            "creating {} ({} external, port {})",
            dev.name,
            self.what(),
            dev.port
        );
        match tunnel::add_link(&*self.nl, dev.link_message(), what).await {
            Ok(()) => {}
            Err(e) if device::is_missing_kind(e.errno()) => {
                return Ok(Ensured::NoModule(e.errno().unwrap_or_default()));
            }
            Err(e) => return Err(e.into()),
        }
        let index = tunnel::created_index(&*self.nl, dev.name).await?;
        self.index = Some(index);
        Ok(Ensured::Created(index))
    }

    // `&mut self`: the fallback `Box<dyn Backend>` is Send but not Sync.
    async fn ensure_address(&mut self) -> Result<(), BackendError> {
        let (Some(lease), Some(index)) = (self.lease, self.index) else {
            return Ok(());
        };
        tunnel::ensure_lease_address(&*self.nl, index, lease, self.dev.name).await
    }
}

#[async_trait]
impl Backend for MetadataBackend {
    async fn prepare(&mut self) -> Result<Prepared, BackendError> {
        let data = serde_json::json!({ "VNI": self.spec.vni, "VtepMAC": self.dev.mac.to_string() });
        let mtu = self.dev.mtu;
        // A missing module is an error here; the fallback, when the
        // Backend asks for it, was chosen before this backend was used.
        if let Some(errno) = self.probe().await? {
            return Err(BackendError::NoModule {
                encap: self.spec.encap,
                errno,
            });
        }
        Ok(Prepared {
            backend_type: self.what().into(),
            backend_data: Some(data),
            mtu,
        })
    }

    async fn attach(&mut self, lease: &Lease) -> Result<(), BackendError> {
        let subnet = lease.subnet.ok_or(BackendError::NoIpv4Subnet {
            backend: self.what(),
        })?;
        self.lease = Some(subnet);
        self.ensure_address().await
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        let node = self.node.clone();
        let (dev, recreated) = match self.ensure_device().await? {
            Ensured::Adopted(index) => (index, false),
            Ensured::Created(index) => (index, true),
            Ensured::NoModule(errno) => {
                return Err(BackendError::NoModule {
                    encap: self.spec.encap,
                    errno,
                })
            }
        };
        self.ensure_address().await?;

        let (encap, vni, underlay) = (self.spec.encap, self.spec.vni, self.spec.underlay);
        tunnel::converge_peers(
            &*self.nl,
            &node,
            (self.lease, None),
            peers,
            dev,
            self.spec.vxlan.direct_routing,
            (encap.backend_type(), underlay),
            recreated,
            |peer, direct| entries::peer_entries(peer, encap, vni, underlay, dev, direct),
        )
        .await
    }
}
