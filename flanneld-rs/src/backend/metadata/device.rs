//! The metadata-mode device: what it must look like, the RTM_NEWLINK that
//! creates it, and whether a device found at start-up can be adopted. Pure.

use std::net::IpAddr;

use netlink_packet_route::link::{InfoKind, LinkMessage};
use rtnetlink::{LinkGeneve, LinkVxlan};

use super::super::{tunnel, vtep_mac, BackendError, Encap, LocalNode, TunnelSpec};
use crate::netlink::dump::LinkState;
use crate::node::mtu::backend_mtu;
use crate::reconcile::Mac;

pub use super::super::devices::{GENEVE_METADATA as GENEVE_DEVICE, VXLAN_METADATA as VXLAN_DEVICE};

/// The device name for an encapsulation.
pub fn device_name(encap: Encap) -> &'static str {
    match encap {
        Encap::Vxlan => VXLAN_DEVICE,
        Encap::Geneve => GENEVE_DEVICE,
    }
}

/// What the device must look like; anything else is recreated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub encap: Encap,
    pub name: &'static str,
    /// Not a device attribute (the device takes every VNI on its port): it
    /// goes into each route's encap and into the published BackendData.
    pub vni: u32,
    pub port: u16,
    /// Tunnel source (IPv4 or IPv6, the underlay's family) and underlay
    /// link: VXLAN only (the kernel's geneve has neither a local address
    /// nor a lower device, and takes both families in external mode).
    pub local: Option<IpAddr>,
    pub underlay: Option<u32>,
    pub mac: Mac,
    pub mtu: u32,
}

impl DeviceSpec {
    /// The device for `spec` on `node`; fails when the node has no
    /// address of the underlay's family.
    pub fn new(spec: &TunnelSpec, node: &LocalNode) -> Result<DeviceSpec, BackendError> {
        let vxlan = spec.encap == Encap::Vxlan;
        let (source, endpoint) = node.tunnel_addrs(spec.underlay)?;
        Ok(DeviceSpec {
            encap: spec.encap,
            name: device_name(spec.encap),
            vni: spec.vni,
            port: spec.port,
            local: vxlan.then_some(source),
            underlay: vxlan.then_some(node.iface_index),
            mac: vtep_mac::derive_ip(endpoint, spec.vni),
            // Geneve without options has VXLAN's 8-byte header: same
            // overhead; an IPv6 outer header costs 20 bytes more.
            mtu: backend_mtu(spec.mtu, node.iface_mtu, spec.underlay.overhead())?,
        })
    }

    /// The RTM_NEWLINK that creates the device, up, in external mode.
    pub fn link_message(&self) -> LinkMessage {
        match self.encap {
            Encap::Vxlan => {
                let mut b = rtnetlink::LinkMessageBuilder::<LinkVxlan>::new(self.name)
                    .collect_metadata(true)
                    .port(self.port)
                    .learning(false);
                match self.local {
                    Some(IpAddr::V4(a)) => b = b.local(a),
                    Some(IpAddr::V6(a)) => b = b.local6(a),
                    None => {}
                }
                if let Some(dev) = self.underlay {
                    b = b.dev(dev);
                }
                b.mtu(self.mtu).address(self.mac.0.to_vec()).up().build()
            }
            Encap::Geneve => rtnetlink::LinkMessageBuilder::<LinkGeneve>::new(self.name)
                .collect_metadata()
                .port(self.port)
                .mtu(self.mtu)
                .address(self.mac.0.to_vec())
                .up()
                .build(),
        }
    }

    /// `Ok` when an existing link can be adopted as is (MTU and up/down are
    /// fixed in place); otherwise why it must be recreated.
    pub fn check_adoptable(&self, link: &LinkState) -> Result<(), String> {
        let (want_kind, kind_name) = match self.encap {
            Encap::Vxlan => (InfoKind::Vxlan, "vxlan"),
            Encap::Geneve => (InfoKind::Geneve, "geneve"),
        };
        if link.kind.as_ref() != Some(&want_kind) {
            return Err(format!(
                "{} exists but is not a {kind_name} device ({:?})",
                self.name, link.kind
            ));
        }
        let mut diffs = Vec::new();
        let (external, port) = match self.encap {
            Encap::Vxlan => {
                let v = link.vxlan.unwrap_or_default();
                let have = v.local.map(IpAddr::V4).or(v.local6.map(IpAddr::V6));
                if self.local.is_some() && have != self.local {
                    diffs.push(format!("local {have:?} != {:?}", self.local));
                }
                if self.underlay.is_some() && v.underlay != self.underlay {
                    diffs.push(format!(
                        "underlay index {:?} != {:?}",
                        v.underlay, self.underlay
                    ));
                }
                if v.gbp {
                    diffs.push("GBP set".to_string());
                }
                (v.external, v.port)
            }
            Encap::Geneve => {
                let g = link.geneve.unwrap_or_default();
                (g.external, g.port)
            }
        };
        if !external {
            diffs.push("not in external (metadata) mode".to_string());
        }
        if port != Some(self.port) {
            diffs.push(format!("port {:?} != {}", port, self.port));
        }
        tunnel::adoption_verdict(self.name, link, self.mac, diffs)
    }
}

pub use super::super::error::{errno_text, no_module_message};

/// Whether a failed RTM_NEWLINK means "no such link kind in this kernel":
/// rtnetlink answers EOPNOTSUPP when no module registers the kind.
pub fn is_missing_kind(errno: Option<i32>) -> bool {
    errno == Some(nix::errno::Errno::EOPNOTSUPP as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::spec::BackendSpec;
    use crate::netlink::dump::{GeneveAttrs, VxlanAttrs};
    use netlink_packet_route::link::{
        InfoData, InfoGeneve, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    };
    use rtnetlink::packet_core::{Emitable, Parseable};
    use serde_json::json;

    use std::net::{Ipv4Addr, Ipv6Addr};

    fn node() -> LocalNode {
        LocalNode {
            iface_name: "eth0".into(),
            iface_index: 3,
            iface_mtu: 9001,
            iface_addr: Ipv4Addr::new(198, 51, 100, 1),
            public_ip: Ipv4Addr::new(198, 51, 100, 1),
            iface_addr6: None,
            public_ipv6: None,
        }
    }

    fn spec(t: &str, b: serde_json::Value) -> DeviceSpec {
        match BackendSpec::parse(t, &b, None).unwrap() {
            BackendSpec::Tunnel(s) => DeviceSpec::new(&s, &node()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv6_underlay_device_has_local6_mtu_minus_70_and_a_v6_derived_mac() {
        let v6: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let n6 = LocalNode {
            iface_addr6: Some(v6),
            public_ipv6: Some(v6),
            ..node()
        };
        let BackendSpec::Tunnel(s) = BackendSpec::parse(
            "vxlan",
            &json!({"Mode": "metadata", "Underlay": "ipv6"}),
            None,
        )
        .unwrap() else {
            panic!()
        };
        let d = DeviceSpec::new(&s, &n6).unwrap();
        assert_eq!(d.mtu, 9001 - 70);
        assert_eq!(d.local, Some(IpAddr::V6(v6)));
        assert_eq!(d.mac, vtep_mac::derive_ip(IpAddr::V6(v6), 1));
        let data = vxlan_data(&d.link_message());
        assert!(data.contains(&InfoVxlan::Local6(v6)), "{data:?}");
        assert!(!data.iter().any(|i| matches!(i, InfoVxlan::Local(_))));
        // Adopted only with that local address.
        let mut l = link(&d);
        assert!(d.check_adoptable(&l).is_ok());
        if let Some(v) = l.vxlan.as_mut() {
            v.local6 = Some("2001:db8:100::9".parse().unwrap());
        }
        assert!(d.check_adoptable(&l).unwrap_err().contains("local"));
        // Geneve: no local address; the same MTU rule.
        let BackendSpec::Tunnel(g) =
            BackendSpec::parse("geneve", &json!({"Underlay": "ipv6"}), None).unwrap()
        else {
            panic!()
        };
        let d = DeviceSpec::new(&g, &n6).unwrap();
        assert_eq!((d.mtu, d.local), (9001 - 70, None));
        // A node without an IPv6 address cannot run it: the error says why.
        let e = DeviceSpec::new(&g, &node()).unwrap_err().to_string();
        assert!(
            e.contains("no global IPv6 address") && e.contains("--public-ipv6"),
            "{e}"
        );
    }

    /// Netlink attributes (type with flags masked, value) of a buffer.
    fn attrs(mut bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
            let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
            assert!(len >= 4 && len <= bytes.len(), "malformed attribute");
            out.push((kind, bytes[4..len].to_vec()));
            bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
        }
        out
    }

    fn get(a: &[(u16, Vec<u8>)], kind: u16) -> Option<Vec<u8>> {
        a.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.clone())
    }

    #[test]
    fn geneve_newlink_message_bytes() {
        let d = spec("geneve", json!({"Port": 7000, "VNI": 5}));
        assert_eq!((d.name, d.mtu, d.port), (GENEVE_DEVICE, 9001 - 50, 7000));
        assert_eq!(d.local, None, "the kernel's geneve has no local address");
        let msg = d.link_message();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // ifinfomsg is 16 bytes: family, pad, type, index, flags, change.
        let flags = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        assert_eq!(flags & iff_up(), iff_up(), "created up");
        let top = attrs(&buf[16..]);
        // IFLA_ADDRESS 1, IFLA_IFNAME 3, IFLA_MTU 4, IFLA_LINKINFO 18.
        assert_eq!(get(&top, 1), Some(d.mac.0.to_vec()));
        assert_eq!(get(&top, 3), Some(b"flannel-geneve\0".to_vec()));
        assert_eq!(get(&top, 4), Some(8951u32.to_ne_bytes().to_vec()));
        let info = attrs(&get(&top, 18).expect("IFLA_LINKINFO"));
        // IFLA_INFO_KIND 1, IFLA_INFO_DATA 2.
        assert_eq!(get(&info, 1), Some(b"geneve\0".to_vec()));
        let data = attrs(&get(&info, 2).expect("IFLA_INFO_DATA"));
        // IFLA_GENEVE_COLLECT_METADATA 6 (a flag: empty), IFLA_GENEVE_PORT 5
        // (network order), and no IFLA_GENEVE_ID 1 / REMOTE 2: external mode.
        assert_eq!(get(&data, 6), Some(Vec::new()));
        assert_eq!(get(&data, 5), Some(7000u16.to_be_bytes().to_vec()));
        assert_eq!(get(&data, 1), None);
        assert_eq!(get(&data, 2), None);

        // netlink-packet-route reads the same thing back.
        let parsed = LinkMessage::parse(buf.as_slice()).unwrap();
        assert!(parsed.header.flags.contains(LinkFlags::Up));
        let infos = parsed
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert!(infos.contains(&LinkInfo::Kind(InfoKind::Geneve)));
        let data = infos
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Geneve(g)) => Some(g.clone()),
                _ => None,
            })
            .unwrap();
        assert!(data.contains(&InfoGeneve::CollectMetadata));
        assert!(data.contains(&InfoGeneve::Port(7000)));
    }

    fn vxlan_data(msg: &LinkMessage) -> Vec<InfoVxlan> {
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => i.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn iff_up() -> u32 {
        LinkFlags::Up.bits()
    }

    #[test]
    fn geneve_default_port_and_mtu_override() {
        let d = spec("geneve", json!({"MTU": 1400}));
        assert_eq!((d.port, d.mtu), (6081, 1400));
        assert_eq!(d.mac, vtep_mac::derive(node().public_ip, 1));
    }

    #[test]
    fn vxlan_newlink_is_external_with_local_and_underlay() {
        let d = spec("vxlan", json!({"Mode": "metadata"}));
        assert_eq!((d.name, d.port, d.mtu), (VXLAN_DEVICE, 8472, 8951));
        let data = vxlan_data(&d.link_message());
        assert!(data.contains(&InfoVxlan::CollectMetadata(true)));
        assert!(data.contains(&InfoVxlan::Port(8472)));
        assert!(data.contains(&InfoVxlan::Local(Ipv4Addr::new(198, 51, 100, 1))));
        assert!(data.contains(&InfoVxlan::Link(3)));
        assert!(data.contains(&InfoVxlan::Learning(false)));
        assert!(!data.iter().any(|i| matches!(i, InfoVxlan::Id(_))));
    }

    fn link(d: &DeviceSpec) -> LinkState {
        LinkState {
            index: 9,
            mac: Some(d.mac),
            mtu: Some(1),
            up: false,
            kind: Some(match d.encap {
                Encap::Vxlan => InfoKind::Vxlan,
                Encap::Geneve => InfoKind::Geneve,
            }),
            vxlan: (d.encap == Encap::Vxlan).then_some(VxlanAttrs {
                vni: Some(0),
                local: match d.local {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                },
                local6: match d.local {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                },
                port: Some(d.port),
                underlay: d.underlay,
                learning: Some(false),
                gbp: false,
                external: true,
            }),
            geneve: (d.encap == Encap::Geneve).then_some(GeneveAttrs {
                vni: None,
                port: Some(d.port),
                external: true,
            }),
        }
    }

    #[test]
    fn adoption_checks_mode_port_and_mac() {
        for d in [
            spec("vxlan", json!({"Mode": "metadata"})),
            spec("geneve", json!({})),
        ] {
            assert_eq!(d.check_adoptable(&link(&d)), Ok(()), "{d:?}");
            let mut l = link(&d);
            l.mac = Some(Mac([2, 0, 0, 0, 0, 9]));
            assert!(d.check_adoptable(&l).unwrap_err().contains("MAC"));
            let mut l = link(&d);
            l.kind = Some(InfoKind::Bridge);
            assert!(d.check_adoptable(&l).is_err());
        }
        let d = spec("vxlan", json!({"Mode": "metadata"}));
        let mut fdb_mode = link(&d);
        fdb_mode.vxlan.as_mut().unwrap().external = false;
        assert!(d
            .check_adoptable(&fdb_mode)
            .unwrap_err()
            .contains("external"));
        let mut port = link(&d);
        port.vxlan.as_mut().unwrap().port = Some(4789);
        assert!(d.check_adoptable(&port).unwrap_err().contains("port"));
        let g = spec("geneve", json!({}));
        let mut not_ext = link(&g);
        not_ext.geneve.as_mut().unwrap().external = false;
        assert!(g
            .check_adoptable(&not_ext)
            .unwrap_err()
            .contains("external"));
    }

    #[test]
    fn no_module_line_names_the_fixes() {
        let line = no_module_message(Encap::Geneve, 95);
        assert_eq!(
            line,
            "the kernel has no geneve support (creating flannel-geneve: Operation not supported); \
             load the geneve module, set \"Fallback\": \"userspace\" in net-conf.json's Backend, \
             or run this node with --datapath-mode userspace"
        );
        assert!(!line.contains('\n'));
        assert_eq!(errno_text(95), "Operation not supported");
        assert!(is_missing_kind(Some(95)));
        assert!(!is_missing_kind(Some(17)));
        assert!(!is_missing_kind(None));
    }
}
