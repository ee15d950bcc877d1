//! ADD: an address from the node subnet, a veth pair between the bridge and
//! the pod, the pod's address and routes. On any failure everything made so
//! far is undone (veth deleted, address released).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;

use crate::bridge::{self, BridgeState};
use crate::commands::{node_subnet, NodeSubnet};
use crate::config::Config;
use crate::env::Attachment;
use crate::error::{code, CniError};
use crate::ipam::{AllocError, Pool, Store};
use crate::naming::{host_veth_name, random_mac};
use crate::netlink::parse::{format_mac, Link};
use crate::netlink::{messages, Netlink, NetlinkError};
use crate::netns::Netns;
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::sysctl;

pub fn add(cfg: &Config, att: &Attachment) -> Result<Value, CniError> {
    let node = node_subnet(cfg)?;
    let pool = Pool::new(node.subnet)?;
    let mtu = cfg.mtu.unwrap_or(node.mtu);
    let requested = cfg.requested_ip(att.args.ip)?;
    // Everything that can be refused is checked before anything is made.
    let prev = cfg
        .prev_result
        .as_ref()
        .map(CniResult::from_prev)
        .transpose()
        .map_err(|e| CniError::new(code::DECODE_FAILURE, e.to_string()))?;
    // Open the namespace before reserving: a missing one must not cost an IP.
    let netns = Netns::open(&att.netns)?;

    let (ip, fresh) = reserve(cfg, att, &pool, requested)?;
    match attach(cfg, att, &netns, &node, &pool, ip, mtu) {
        // Not first in the chain: append ours to what came before.
        Ok(ours) => Ok(match prev {
            Some(p) => p.chain(ours),
            None => ours,
        }
        .to_json(cfg.version)),
        Err(e) => {
            if fresh {
                if let Ok(store) = Store::open(&cfg.data_dir, &cfg.name) {
                    let _ = store.release_ip(ip);
                }
            }
            Err(e)
        }
    }
}

/// Reserves the attachment's address. Returns it and whether it is new
/// (an existing reservation for the same container + ifname is reused, and
/// must then survive a failed ADD).
fn reserve(
    cfg: &Config,
    att: &Attachment,
    pool: &Pool,
    requested: Option<Ipv4Addr>,
) -> Result<(Ipv4Addr, bool), CniError> {
    let store = Store::open(&cfg.data_dir, &cfg.name)?;
    let list = store.list()?;
    let stale = pool.stale(list.iter().map(|r| &r.ip));
    if !stale.is_empty() {
        return Err(AllocError::SubnetChanged {
            subnet: pool.subnet,
            stale,
        }
        .into());
    }
    if let Some(mine) = list
        .iter()
        .find(|r| r.belongs_to(&att.container_id, &att.ifname))
    {
        if requested.is_none_or(|want| want == mine.ip) {
            return Ok((mine.ip, false));
        }
        return Err(CniError::new(
            code::REQUESTED_IP_UNAVAILABLE,
            format!(
                "{} / {} already holds {}, not the requested address; run DEL first",
                att.container_id, att.ifname, mine.ip
            ),
        ));
    }
    let used: HashSet<Ipv4Addr> = list.iter().map(|r| r.ip).collect();
    let ip = pool.allocate(&used, store.last_reserved(), requested)?;
    store.reserve(ip, &att.container_id, &att.ifname)?;
    Ok((ip, true))
}

fn attach(
    cfg: &Config,
    att: &Attachment,
    netns: &Netns,
    node: &NodeSubnet,
    pool: &Pool,
    ip: Ipv4Addr,
    mtu: u32,
) -> Result<CniResult, CniError> {
    let mut nl = Netlink::open()?;
    let gateway = Ipv4Net::new(node.gateway(), pool.subnet.prefix_len())
        .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
    let pod_addr = Ipv4Net::new(ip, pool.subnet.prefix_len())
        .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
    let BridgeState {
        link: bridge,
        has_gateway,
        stale_gateways,
    } = bridge::ensure(&mut nl, &cfg.bridge, gateway, &node.networks)?;
    let host_name = host_veth_name(&att.container_id, &att.ifname);
    let host_mac = random_mac();
    let pod_mac = random_mac();

    let spec = messages::VethSpec {
        host_name: &host_name,
        host_mac,
        bridge_index: bridge.index,
        pod_name: &att.ifname,
        pod_mac,
        pod_netns_fd: std::os::fd::AsRawFd::as_raw_fd(&netns.file),
        mtu,
    };
    // One round trip: the pair, hairpin on the new bridge port, and the
    // gateway address on the bridge if it is missing.
    let mut reqs = vec![messages::create_veth(&spec)];
    if cfg.hairpin_mode {
        reqs.push(messages::set_hairpin(&host_name, true));
    }
    if !has_gateway {
        reqs.push(messages::add_address(bridge.index, gateway, true));
        // A gateway of an earlier lease would keep routing the old subnet to
        // this node; IPAM has already checked that no pod still uses it.
        for old in &stale_gateways {
            reqs.push(messages::del_address(bridge.index, *old));
        }
    }
    let mut replies = nl.exchange(reqs)?.into_iter();
    if let Some(Err(e)) = replies.next() {
        return Err(veth_error(&mut nl, e, &host_name, att, netns));
    }
    // From here on the pair exists: undo it on failure. A concurrent ADD
    // may have removed the same stale gateway first (EADDRNOTAVAIL).
    let pod = replies
        .try_for_each(|r| match r {
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other.map(|_| ()),
        })
        .map_err(CniError::from)
        .and_then(|()| configure_pod(att, netns, node, cfg, pod_addr, pool))
        .and_then(|pod| {
            sysctl::ensure_ip_forward()?;
            Ok(pod)
        });
    let pod = match pod {
        Ok(p) => p,
        Err(e) => {
            let _ = nl.request(messages::del_link(&host_name));
            return Err(e);
        }
    };

    let mut routes: Vec<Route> = node
        .networks
        .iter()
        .map(|n| Route {
            dst: IpNet::V4(*n),
            gw: Some(IpAddr::V4(node.gateway())),
        })
        .collect();
    if cfg.is_default_gateway {
        routes.push(Route {
            dst: IpNet::V4(Ipv4Net::default()),
            gw: Some(IpAddr::V4(node.gateway())),
        });
    }
    let ours = CniResult {
        interfaces: vec![
            Interface {
                name: cfg.bridge.clone(),
                mac: bridge.mac.map(format_mac).unwrap_or_default(),
                sandbox: None,
                mtu: None,
            },
            Interface {
                name: host_name,
                mac: format_mac(host_mac),
                sandbox: None,
                mtu: Some(mtu),
            },
            Interface {
                name: att.ifname.clone(),
                mac: pod
                    .mac
                    .map(format_mac)
                    .unwrap_or_else(|| format_mac(pod_mac)),
                sandbox: Some(att.netns.clone()),
                mtu: Some(mtu),
            },
        ],
        ips: vec![IpConfig {
            address: IpNet::V4(pod_addr),
            gateway: Some(IpAddr::V4(node.gateway())),
            interface: Some(2),
        }],
        routes,
        dns: Value::Null,
    };
    Ok(ours)
}

/// Explains a failed veth creation; EEXIST means one of the two names is
/// taken, and which one matters to the operator.
fn veth_error(
    nl: &mut Netlink,
    e: NetlinkError,
    host_name: &str,
    att: &Attachment,
    netns: &Netns,
) -> CniError {
    if e.errno() != Some(libc::EEXIST) {
        return e.into();
    }
    let msg = if nl.link(host_name).is_ok() {
        format!(
            "host-side veth {host_name} for {} / {} already exists: the attachment was added before and not deleted; run DEL first",
            att.container_id, att.ifname
        )
    } else {
        format!("interface {} already exists in {}", att.ifname, netns.path)
    };
    CniError::new(code::ALREADY_EXISTS, msg)
}

/// Address and routes on the pod end, through a socket opened inside the
/// pod namespace.
fn configure_pod(
    att: &Attachment,
    netns: &Netns,
    node: &NodeSubnet,
    cfg: &Config,
    addr: Ipv4Net,
    pool: &Pool,
) -> Result<Link, CniError> {
    let mut pnl = netns.netlink()?;
    // Looked up here, by name, while the pod end is still down. The index
    // is also the host end's IFLA_LINK, but a RTM_GETLINK first runs the
    // pending linkwatch event of the link it reads: cheap for this down
    // end, while the host end (up, no carrier yet) would go through
    // dev_deactivate and wait for an RCU grace period on every ADD
    // (measured: docs/PERFORMANCE.md, CNI section).
    let link = pnl.link(&att.ifname)?;
    let mut reqs = vec![
        messages::set_link_up(link.index),
        messages::add_address(link.index, addr, false),
    ];
    for n in &node.networks {
        // The pod's own subnet is on-link already (the address's prefix route).
        if n.contains(&pool.subnet) && n.prefix_len() == pool.subnet.prefix_len() {
            continue;
        }
        reqs.push(messages::add_route(*n, node.gateway(), link.index));
    }
    if cfg.is_default_gateway {
        reqs.push(messages::add_route(
            Ipv4Net::default(),
            node.gateway(),
            link.index,
        ));
    }
    pnl.batch(reqs)?;
    Ok(link)
}
