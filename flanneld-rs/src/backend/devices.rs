//! The one registry of the devices this daemon's datapath modes create,
//! and which of them cannot run side by side (they hold the same UDP
//! port). A mode removes the others' devices only through here, only by
//! these names, and only when the link is of the kind we would have made.

use netlink_packet_route::link::InfoKind;

use super::BackendError;
use crate::model::Encap;
use crate::netlink::Kernel;

/// The VXLAN metadata-mode device (not `flannel.<VNI>`: that is FDB mode's).
pub const VXLAN_METADATA: &str = "flannel-vxlan";
/// The Geneve metadata-mode device.
pub const GENEVE_METADATA: &str = "flannel-geneve";
/// The userspace datapath's TUN device (one per node, any encapsulation).
pub const TUN: &str = "flannel-tun";

/// A device one of our datapath modes owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedDevice {
    /// Kernel VXLAN, FDB mode (Go flannel's `flannel.<VNI>`).
    VxlanFdb { vni: u32 },
    /// Kernel VXLAN or Geneve in metadata (external) mode; the device
    /// takes every VNI, `vni` is the cluster's (which FDB-mode device it
    /// displaces).
    Metadata { encap: Encap, vni: u32 },
    /// The userspace datapath's TUN device, for this encapsulation.
    Tun { encap: Encap, vni: u32 },
}

impl OwnedDevice {
    pub fn name(self) -> String {
        match self {
            OwnedDevice::VxlanFdb { vni } => format!("flannel.{vni}"),
            OwnedDevice::Metadata {
                encap: Encap::Vxlan,
                ..
            } => VXLAN_METADATA.into(),
            OwnedDevice::Metadata {
                encap: Encap::Geneve,
                ..
            } => GENEVE_METADATA.into(),
            OwnedDevice::Tun { .. } => TUN.into(),
        }
    }

    /// The link kind the device has when we made it.
    pub fn kind(self) -> InfoKind {
        match self {
            OwnedDevice::VxlanFdb { .. }
            | OwnedDevice::Metadata {
                encap: Encap::Vxlan,
                ..
            } => InfoKind::Vxlan,
            OwnedDevice::Metadata {
                encap: Encap::Geneve,
                ..
            } => InfoKind::Geneve,
            OwnedDevice::Tun { .. } => InfoKind::Tun,
        }
    }

    /// The other modes' devices that must go before this one runs: the
    /// kernel VXLAN devices (either mode) and a userspace VXLAN datapath
    /// all bind the VXLAN UDP port. (Geneve modes are left as they were:
    /// no conflict handled yet.)
    pub fn conflicting(self) -> Vec<OwnedDevice> {
        let vxlan_metadata = |vni| OwnedDevice::Metadata {
            encap: Encap::Vxlan,
            vni,
        };
        match self {
            OwnedDevice::VxlanFdb { vni } => vec![vxlan_metadata(vni)],
            OwnedDevice::Metadata {
                encap: Encap::Vxlan,
                vni,
            } => vec![OwnedDevice::VxlanFdb { vni }],
            OwnedDevice::Tun {
                encap: Encap::Vxlan,
                vni,
            } => vec![OwnedDevice::VxlanFdb { vni }, vxlan_metadata(vni)],
            OwnedDevice::Metadata {
                encap: Encap::Geneve,
                ..
            }
            | OwnedDevice::Tun {
                encap: Encap::Geneve,
                ..
            } => Vec::new(),
        }
    }
}

/// Removes the devices that conflict with `me` (and the routes through
/// them, which the kernel drops with the device). True when something was
/// removed.
pub async fn remove_conflicting(nl: &dyn Kernel, me: OwnedDevice) -> Result<bool, BackendError> {
    let mut removed = false;
    for other in me.conflicting() {
        let why = format!(
            "this node now runs {}, which needs the UDP port it holds",
            describe(me)
        );
        removed |= remove(nl, other, &why).await?;
    }
    Ok(removed)
}

fn describe(d: OwnedDevice) -> &'static str {
    match d {
        OwnedDevice::VxlanFdb { .. } => "VXLAN in FDB mode",
        OwnedDevice::Metadata {
            encap: Encap::Vxlan,
            ..
        } => "VXLAN in metadata mode",
        OwnedDevice::Metadata {
            encap: Encap::Geneve,
            ..
        } => "Geneve in metadata mode",
        OwnedDevice::Tun { .. } => "the userspace datapath",
    }
}

/// Removes `dev` when a link of that name and kind exists (a link of
/// another kind under the name is not ours: left alone).
async fn remove(nl: &dyn Kernel, dev: OwnedDevice, why: &str) -> Result<bool, BackendError> {
    let name = dev.name();
    let Some(link) = nl.link_by_name(&name).await? else {
        return Ok(false);
    };
    if link.kind != Some(dev.kind()) {
        return Ok(false);
    }
    tracing::info!("removing {name} and its routes: {why}");
    nl.del_link(link.index, &format!("removing {name} ({why})"))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vxlan_port_holders_exclude_each_other_and_nothing_else() {
        let fdb = OwnedDevice::VxlanFdb { vni: 4 };
        let md = OwnedDevice::Metadata {
            encap: Encap::Vxlan,
            vni: 4,
        };
        let tun = OwnedDevice::Tun {
            encap: Encap::Vxlan,
            vni: 4,
        };
        assert_eq!(fdb.conflicting(), vec![md]);
        assert_eq!(md.conflicting(), vec![fdb]);
        assert_eq!(tun.conflicting(), vec![fdb, md]);
        let geneve = OwnedDevice::Metadata {
            encap: Encap::Geneve,
            vni: 4,
        };
        assert!(geneve.conflicting().is_empty());
        assert_eq!(geneve.name(), "flannel-geneve");
        assert_eq!(fdb.name(), "flannel.4");
        assert_eq!(md.name(), "flannel-vxlan");
        assert_eq!(tun.name(), "flannel-tun");
    }

    #[tokio::test]
    async fn only_a_link_of_our_kind_under_our_name_is_removed() {
        use crate::netlink::fake::{Call, FakeKernel};
        let k = FakeKernel::new();
        // Someone else's dummy link called flannel-vxlan: not ours.
        k.add_plain_link(VXLAN_METADATA, 1500);
        let fdb = OwnedDevice::VxlanFdb { vni: 1 };
        assert!(!remove_conflicting(&k, fdb).await.unwrap());
        assert!(k.link(VXLAN_METADATA).is_some());
        assert!(k.take_calls().is_empty());
        // A VXLAN link under that name is ours and goes.
        k.remove_link_by_hand(VXLAN_METADATA);
        k.state().links.push(crate::netlink::fake::FakeLink {
            name: VXLAN_METADATA.into(),
            state: crate::netlink::dump::LinkState {
                index: 40,
                mac: None,
                mtu: Some(1450),
                up: true,
                kind: Some(InfoKind::Vxlan),
                vxlan: None,
                geneve: None,
            },
        });
        assert!(remove_conflicting(&k, fdb).await.unwrap());
        assert_eq!(k.take_calls(), vec![Call::DelLink { index: 40 }]);
    }
}
