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

use super::{
    tunnel, vxlan, Backend, BackendError, Datapath, Encap, Fallback, LocalNode, Peer, Prepared,
    ReconcileReport, TunnelSpec,
};
use crate::netlink::KernelRef;
pub use device::{DeviceSpec, GENEVE_DEVICE, VXLAN_DEVICE};

/// The metadata-mode backend for `spec` (with its userspace fallback).
pub fn new(netlink: KernelRef, spec: TunnelSpec) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(MetadataBackend::new(netlink, spec)))
}

/// What making sure the device exists came to.
enum Ensured {
    Adopted,
    Created,
    /// The kernel cannot create this kind of link; the errno's text.
    NoModule(String),
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
        let dev = self
            .dev
            .clone()
            .ok_or_else(|| BackendError::Other(format!("{}: used before prepare", self.what())))?;
        if let Some(index) =
            tunnel::adopt_or_remove(&*self.nl, dev.name, dev.mtu, |l| dev.check_adoptable(l))
                .await?
        {
            self.index = Some(index);
            return Ok(Ensured::Adopted);
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
                let cause = e
                    .errno()
                    .map(device::errno_text)
                    .unwrap_or_else(|| e.to_string());
                return Ok(Ensured::NoModule(cause));
            }
            Err(e) => return Err(e.into()),
        }
        self.index = Some(tunnel::created_index(&*self.nl, dev.name).await?);
        Ok(Ensured::Created)
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
        if self.spec.encap == Encap::Vxlan {
            tunnel::remove_other_mode_device(
                &*self.nl,
                &vxlan::device_name(self.spec.vni),
                "this node now runs VXLAN in metadata mode, which needs the UDP port it holds",
            )
            .await?;
        }
        if let Ensured::NoModule(cause) = self.ensure_device().await? {
            let line = device::no_module_message(self.spec.encap, &cause);
            if self.spec.fallback != Fallback::Userspace {
                return Err(BackendError::Other(line));
            }
            tracing::warn!(
                "the kernel has no {} support (creating {device_name}: {cause}); \
                 running the userspace datapath as Backend.Fallback asks",
                self.what()
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
        let subnet = lease.subnet.ok_or_else(|| {
            BackendError::Other(format!("{}: the lease has no IPv4 subnet", self.what()))
        })?;
        self.lease = Some(subnet);
        self.ensure_address().await
    }

    /// The userspace fallback's packet counters, so /metrics shows them.
    fn datapath_counters(&self) -> Option<std::sync::Arc<crate::userspace::counters::Counters>> {
        self.fallback.as_ref().and_then(|fb| fb.datapath_counters())
    }

    async fn reconcile(&mut self, peers: &[Peer]) -> Result<ReconcileReport, BackendError> {
        if let Some(fb) = self.fallback.as_mut() {
            return fb.reconcile(peers).await;
        }
        let node = self.node.clone().ok_or_else(|| {
            BackendError::Other(format!("{}: reconcile called before prepare", self.what()))
        })?;
        let recreated = match self.ensure_device().await? {
            Ensured::Adopted => false,
            Ensured::Created => true,
            Ensured::NoModule(cause) => {
                return Err(BackendError::Other(device::no_module_message(
                    self.spec.encap,
                    &cause,
                )))
            }
        };
        self.ensure_address().await?;
        let dev = self
            .index
            .ok_or_else(|| BackendError::Other(format!("{}: no device index", self.what())))?;

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
