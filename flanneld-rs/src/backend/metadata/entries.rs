//! A peer's entries in metadata mode. Pure: the L2 check is the caller's.

use super::super::{tunnel, Encap, Peer, PeerError, Underlay};
use crate::reconcile::{Neigh, Route, State, TunnelEncap};

/// The permanent neighbour `peer .0 -> peer VtepMAC` (the inner frame's
/// destination MAC) and the onlink route to the peer's subnet carrying
/// `encap ip id <vni> dst <peer public IP>` (`encap ip6 ... dst <peer
/// public IPv6>` over an IPv6 underlay); with `direct` (DirectRouting,
/// peer on our L2) a plain route on that underlay link instead.
pub fn peer_entries(
    peer: &Peer,
    encap: Encap,
    vni: u32,
    underlay: Underlay,
    dev: u32,
    direct: Option<u32>,
) -> Result<State, PeerError> {
    if let Some(underlay) = direct {
        return Ok(tunnel::direct_route(peer, underlay));
    }
    let mac = tunnel::peer_vtep_mac(peer, encap.backend_type())?;
    let dst = peer.endpoint(underlay)?;
    let gw = peer.subnet.network();
    Ok(State {
        neighs: vec![Neigh { ip: gw, mac }],
        fdbs: Vec::new(),
        routes: vec![Route {
            dst: peer.subnet,
            gateway: gw,
            oif: dev,
            onlink: true,
            encap: Some(TunnelEncap {
                id: u64::from(vni),
                dst,
            }),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::Mac;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn peer(kind: &str, data: serde_json::Value) -> Peer {
        Peer {
            subnet: "10.244.7.0/24".parse().unwrap(),
            public_ip: Ipv4Addr::new(198, 51, 100, 7),
            public_ipv6: Some("2001:db8:100::7".parse().unwrap()),
            backend_type: kind.into(),
            backend_data: Some(data),
        }
    }

    #[test]
    fn neighbour_and_encapsulated_onlink_route() {
        for encap in [Encap::Vxlan, Encap::Geneve] {
            let p = peer(
                encap.backend_type(),
                json!({"VNI": 9, "VtepMAC": "0a:00:00:00:00:07"}),
            );
            let st = peer_entries(&p, encap, 9, Underlay::Ipv4, 11, None).unwrap();
            let gw = Ipv4Addr::new(10, 244, 7, 0);
            let mac: Mac = "0a:00:00:00:00:07".parse().unwrap();
            assert_eq!(st.neighs, vec![Neigh { ip: gw, mac }]);
            assert!(st.fdbs.is_empty(), "metadata mode has no FDB entries");
            assert_eq!(
                st.routes,
                vec![Route {
                    dst: p.subnet,
                    gateway: gw,
                    oif: 11,
                    onlink: true,
                    encap: Some(TunnelEncap {
                        id: 9,
                        dst: std::net::IpAddr::V4(p.public_ip)
                    }),
                }]
            );
        }
    }

    #[test]
    fn ipv6_underlay_routes_go_to_the_peers_public_ipv6() {
        let mut p = peer("geneve", json!({"VtepMAC": "0a:00:00:00:00:07"}));
        let st = peer_entries(&p, Encap::Geneve, 3, Underlay::Ipv6, 11, None).unwrap();
        assert_eq!(
            st.routes[0].encap,
            Some(TunnelEncap {
                id: 3,
                dst: "2001:db8:100::7".parse().unwrap()
            })
        );
        p.public_ipv6 = None;
        let e = peer_entries(&p, Encap::Geneve, 3, Underlay::Ipv6, 11, None).unwrap_err();
        assert!(matches!(e, PeerError::NoPublicIpv6 { .. }), "{e}");
    }

    #[test]
    fn direct_peer_gets_a_plain_underlay_route() {
        let p = peer("vxlan", json!({"VtepMAC": "0a:00:00:00:00:07"}));
        let st = peer_entries(&p, Encap::Vxlan, 1, Underlay::Ipv4, 11, Some(3)).unwrap();
        assert!(st.neighs.is_empty());
        assert_eq!(st.routes[0].gateway, p.public_ip);
        assert_eq!((st.routes[0].oif, st.routes[0].encap), (3, None));
    }

    #[test]
    fn other_encapsulation_or_missing_mac_is_an_error() {
        let vx = peer("vxlan", json!({"VtepMAC": "0a:00:00:00:00:07"}));
        assert!(
            peer_entries(&vx, Encap::Geneve, 1, Underlay::Ipv4, 11, None)
                .unwrap_err()
                .to_string()
                .contains("same backend")
        );
        let bad = peer("geneve", json!({"VNI": 1}));
        assert!(
            peer_entries(&bad, Encap::Geneve, 1, Underlay::Ipv4, 11, None)
                .unwrap_err()
                .to_string()
                .contains("VtepMAC")
        );
    }
}
