//! CHECK: the attachment ADD made still exists as its result says: the pod
//! interface with its address and routes, the host veth on the bridge, the
//! IP reservation, and a node subnet that still contains the address.

use std::net::{IpAddr, Ipv4Addr};

use crate::commands::node_subnet;
use crate::config::Config;
use crate::env::Attachment;
use crate::error::{code, CniError};
use crate::ipam::Store;
use crate::naming::host_veth_name;
use crate::netlink::{messages, parse, Netlink, NetlinkError};
use crate::netns::Netns;
use crate::result::CniResult;

fn failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg)
}

fn missing_or(e: NetlinkError, msg: String) -> CniError {
    if e.errno() == Some(libc::ENODEV) {
        failed(msg)
    } else {
        e.into()
    }
}

pub fn check(cfg: &Config, att: &Attachment) -> Result<(), CniError> {
    if !cfg.version.has_check() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, got {}",
                cfg.version.as_str()
            ),
        ));
    }
    let prev = cfg.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult (the ADD result)",
        )
    })?;
    let prev = CniResult::from_prev(prev)
        .map_err(|e| CniError::new(code::DECODE_FAILURE, e.to_string()))?;
    // Our address: the IPv4 entry pointing at the pod interface.
    let ours = prev
        .ips
        .iter()
        .find(|ip| {
            ip.address.addr().is_ipv4()
                && ip
                    .interface
                    .and_then(|i| prev.interfaces.get(i))
                    .is_some_and(|i| i.name == att.ifname && i.sandbox.is_some())
        })
        .ok_or_else(|| failed(format!("prevResult has no IPv4 address on {}", att.ifname)))?;
    let IpAddr::V4(ip) = ours.address.addr() else {
        return Err(failed("prevResult address is not IPv4".into()));
    };
    let prefix = ours.address.prefix_len();

    let node = node_subnet(cfg)?;
    if !node.subnet.trunc().contains(&ip) {
        return Err(failed(format!(
            "{ip} is outside the node's current subnet {} (the lease changed)",
            node.subnet.trunc()
        )));
    }

    check_pod(att, &prev, ip, prefix)?;

    let mut nl = Netlink::open()?;
    let host = host_veth_name(&att.container_id, &att.ifname);
    let host_link = nl
        .link(&host)
        .map_err(|e| missing_or(e, format!("host-side veth {host} is missing")))?;
    let bridge = nl
        .link(&cfg.bridge)
        .map_err(|e| missing_or(e, format!("bridge {} is missing", cfg.bridge)))?;
    if host_link.master != Some(bridge.index) {
        return Err(failed(format!(
            "{host} is not attached to bridge {}",
            cfg.bridge
        )));
    }

    let store = Store::open(&cfg.data_dir, &cfg.name)?;
    let reserved = store
        .list()?
        .into_iter()
        .any(|r| r.ip == ip && r.belongs_to(&att.container_id, &att.ifname));
    if !reserved {
        return Err(failed(format!(
            "no IPAM reservation of {ip} for {} / {}",
            att.container_id, att.ifname
        )));
    }
    Ok(())
}

fn check_pod(att: &Attachment, prev: &CniResult, ip: Ipv4Addr, prefix: u8) -> Result<(), CniError> {
    let netns = Netns::open(&att.netns)?;
    let mut pnl = netns.netlink()?;
    let link = pnl.link(&att.ifname).map_err(|e| {
        missing_or(
            e,
            format!("interface {} is missing in {}", att.ifname, att.netns),
        )
    })?;
    if !link.up {
        return Err(failed(format!("interface {} is down", att.ifname)));
    }
    // A socket runs one dump at a time (EBUSY otherwise): two requests.
    let addrs = pnl.request(messages::dump_addresses())?;
    let routes = pnl.request(messages::dump_routes())?;
    let has_addr = addrs
        .iter()
        .filter_map(parse::address)
        .any(|a| a.index == link.index && a.addr == ip && a.prefix_len == prefix);
    if !has_addr {
        return Err(failed(format!(
            "{ip}/{prefix} is not on {} in {}",
            att.ifname, att.netns
        )));
    }
    let routes: Vec<parse::Route> = routes.iter().filter_map(parse::route).collect();
    for want in &prev.routes {
        let (IpAddr::V4(dst), Some(IpAddr::V4(gw))) = (want.dst.network(), want.gw) else {
            continue;
        };
        let present = routes.iter().any(|r| {
            r.in_main_table()
                && r.dst == dst
                && r.prefix_len == want.dst.prefix_len()
                && r.gateway == Some(gw)
        });
        // The pod's own subnet is reached on-link, without a gateway route.
        let on_link = want.dst.contains(&IpAddr::V4(ip)) && want.dst.prefix_len() >= prefix;
        if !present && !on_link {
            return Err(failed(format!(
                "route {} via {gw} is missing in {}",
                want.dst, att.netns
            )));
        }
    }
    Ok(())
}
