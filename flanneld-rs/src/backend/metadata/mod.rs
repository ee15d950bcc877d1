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
use lease_store::{Lease, NetworkConfig};

use super::devices::{self, OwnedDevice};
use super::{
    tunnel, Backend, BackendError, Datapath, Fallback, LocalNode, Peer, Prepared, ReconcileReport,
    TunnelSpec,
};
use crate::netlink::KernelRef;
pub use device::{DeviceSpec, GENEVE_DEVICE, VXLAN_DEVICE};

/// The metadata-mode backend for `spec` (with its userspace fallback).
pub fn new(netlink: KernelRef, spec: TunnelSpec) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(MetadataBackend::new(netlink, spec)))
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
    node: Option<LocalNode>,
    dev: Option<DeviceSpec>,
    index: Option<u32>,
    lease: Option<Ipv4Net>,
    /// The userspace datapath, once the fallback took over.
    fallback: Option<Box<dyn Backend>>,
    /// Builds the fallback datapath (the userspace backend; a test puts a
    /// recording one here, since the real one opens a TUN device).
    make_fallback: FallbackFactory,
}

/// Builds the datapath that runs when the kernel lacks the device's module.
pub type FallbackFactory = fn(KernelRef, TunnelSpec) -> Result<Box<dyn Backend>, BackendError>;

impl MetadataBackend {
    pub fn new(nl: impl Into<KernelRef>, spec: TunnelSpec) -> Self {
        MetadataBackend {
            nl: nl.into(),
            spec,
            node: None,
            dev: None,
            index: None,
            lease: None,
            fallback: None,
            make_fallback: super::userspace::new,
        }
    }

    /// Uses `factory` for the fallback datapath instead of the userspace one.
    pub fn with_fallback_factory(mut self, factory: FallbackFactory) -> Self {
        self.make_fallback = factory;
        self
    }

    /// The device as wanted (after `prepare`; `None` when the fallback runs).
    pub fn device(&self) -> Option<&DeviceSpec> {
        self.dev.as_ref()
    }

    /// True when the userspace fallback is running instead of the kernel.
    pub fn fell_back(&self) -> bool {
        self.fallback.is_some()
    }

    fn what(&self) -> &'static str {
        self.spec.encap.backend_type()
    }

    async fn ensure_device(&mut self) -> Result<Ensured, BackendError> {
        let dev = self.dev.clone().ok_or(BackendError::NotPrepared {
            backend: self.what(),
        })?;
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
        let (Some(lease), Some(index), Some(dev)) = (self.lease, self.index, &self.dev) else {
            return Ok(());
        };
        tunnel::ensure_lease_address(&*self.nl, index, lease, dev.name).await
    }
}

#[async_trait]
impl Backend for MetadataBackend {
    async fn prepare(
        &mut self,
        node: &LocalNode,
        config: &NetworkConfig,
    ) -> Result<Prepared, BackendError> {
        if let Some(fb) = self.fallback.as_mut() {
            return fb.prepare(node, config).await;
        }
        let dev = DeviceSpec::new(&self.spec, node)?;
        let data = serde_json::json!({ "VNI": self.spec.vni, "VtepMAC": dev.mac.to_string() });
        let mtu = dev.mtu;
        let device_name = dev.name;
        self.dev = Some(dev);
        self.node = Some(node.clone());
        let me = OwnedDevice::Metadata {
            encap: self.spec.encap,
            vni: self.spec.vni,
        };
        devices::remove_conflicting(&*self.nl, me).await?;
        if let Ensured::NoModule(errno) = self.ensure_device().await? {
            if self.spec.fallback != Fallback::Userspace {
                return Err(BackendError::NoModule {
                    encap: self.spec.encap,
                    errno,
                });
            }
            tracing::warn!(
                "the kernel has no {} support (creating {device_name}: {}); \
                 running the userspace datapath as Backend.Fallback asks",
                self.what(),
                super::error::errno_text(errno)
            );
            let spec = TunnelSpec {
                datapath: Datapath::Userspace,
                ..self.spec
            };
            let mut fb = (self.make_fallback)(self.nl.clone(), spec)?;
            let prepared = fb.prepare(node, config).await;
            self.fallback = Some(fb);
            self.dev = None;
            return prepared;
        }
        Ok(Prepared {
            backend_type: self.what().into(),
            backend_data: Some(data),
            mtu,
        })
    }

    async fn attach(&mut self, lease: &Lease) -> Result<(), BackendError> {
        if let Some(fb) = self.fallback.as_mut() {
            return fb.attach(lease).await;
        }
        let subnet = lease.subnet.ok_or(BackendError::NoIpv4Subnet {
            backend: self.what(),
        })?;
        self.lease = Some(subnet);
        self.ensure_address().await
    }

    /// The userspace fallback's packet statistics, so /metrics shows them.
    fn stats(&self) -> Option<std::sync::Arc<dyn super::DatapathStats>> {
        self.fallback.as_ref().and_then(|fb| fb.stats())
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        if let Some(fb) = self.fallback.as_mut() {
            return fb.reconcile(peers).await;
        }
        let node = self.node.clone().ok_or(BackendError::NotPrepared {
            backend: self.what(),
        })?;
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
