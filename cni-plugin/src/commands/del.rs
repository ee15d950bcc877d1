//! DEL: remove the veth pair and release the address. Works when the pod
//! namespace is gone or CNI_NETNS is empty, and when repeated; every step is
//! tried even if an earlier one failed.
//!
//! Deleting a veth makes the kernel wait (RCU grace periods, references
//! draining) for 15-30 ms inside the RTM_DELLINK call, far longer than the
//! rest of DEL. So DEL first makes the pair harmless and nameless: both ends
//! down and renamed to tombstones (`fdel...`), which frees the pod's
//! CNI_IFNAME and the host-side veth name for an immediate re-ADD. Then a
//! detached child deletes the pair while the plugin answers the runtime. If
//! any of that is not possible (or CNI_NETNS is empty, so the pod end cannot
//! be renamed), DEL deletes the pair itself, as before.

use crate::background;
use crate::config::Config;
use crate::env::Attachment;
use crate::error::CniError;
use crate::ipam::Store;
use crate::naming::{host_veth_name, random_u64, tombstone_name, End};
use crate::netlink::messages;
use crate::netlink::{Netlink, NetlinkError};
use crate::netns::{Netns, NetnsError};

/// What became of the attachment's veth pair.
enum Pair {
    /// Down and renamed; the socket (in the node namespace) and the host
    /// end's index, for the deletion still to do.
    Tombstoned(Netlink, u32),
    /// Gone already, or deleted synchronously just now.
    Gone,
    /// No host end under our name: maybe a pod end made by another plugin.
    NotOurs,
}

pub fn del(cfg: &Config, att: &Attachment) -> Result<(), CniError> {
    let mut errors: Vec<CniError> = Vec::new();

    let pair = Netlink::open()
        .map_err(CniError::from)
        .and_then(|nl| detach_pair(nl, att));
    let pending = match pair {
        Ok(Pair::Tombstoned(nl, index)) => Some((nl, index)),
        Ok(Pair::Gone) => None,
        Ok(Pair::NotOurs) => {
            // e.g. made by flannel's bridge plugin before a migration:
            // remove the pod end by its name instead.
            if let Err(e) = del_in_pod(att) {
                errors.push(e);
            }
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };

    // The store (and its lock file descriptor) is dropped before the fork
    // below, so the child cannot hold the IPAM lock.
    match Store::open(&cfg.data_dir, &cfg.name)
        .and_then(|s| s.release(&att.container_id, &att.ifname))
    {
        Ok(_) => {}
        Err(e) => errors.push(e.into()),
    }

    if let Some((mut nl, index)) = pending {
        let datagram = nl.prepare(messages::del_link_index(index));
        // Tests slow the child down to see that the runtime is not kept
        // waiting for it (cni-plugin/tests/del_background.rs).
        let delay_ms = std::env::var(background::TEST_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if let Err(why) = background::send_detached(nl.raw_fd(), &datagram, delay_ms) {
            eprintln!("flannel-rs: deleting veth #{index} in the foreground: {why}");
            if let Err(e) = delete_host_end(&mut nl, index) {
                errors.push(e.into());
            }
        }
    }

    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(
            CniError::new(errors[0].code, "DEL failed in several steps").with_details(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ),
    }
}

/// Takes both ends of the attachment's pair down and renames them to
/// tombstones. Deleting the host end later removes the pod end with it,
/// wherever that is; if the pod namespace died, the kernel already removed
/// both.
fn detach_pair(mut nl: Netlink, att: &Attachment) -> Result<Pair, CniError> {
    let host_name = host_veth_name(&att.container_id, &att.ifname);
    let host = match nl.link(&host_name) {
        Ok(l) => l,
        Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(Pair::NotOurs),
        Err(e) => return Err(e.into()),
    };
    if att.netns.is_empty() {
        // The pod end is somewhere under CNI_IFNAME and we cannot reach it
        // to rename it: only deleting the pair frees that name now.
        delete_host_end(&mut nl, host.index)?;
        return Ok(Pair::Gone);
    }
    let nonce = random_u64();
    let tombstoned = nl
        .batch(vec![
            messages::set_link_down(host.index),
            messages::rename_link(
                host.index,
                &tombstone_name(&att.container_id, &att.ifname, End::Host, nonce),
            ),
        ])
        .map_err(CniError::from)
        .and_then(|()| tombstone_pod_end(att, host.index, host.peer, nonce));
    match tombstoned {
        Ok(()) => Ok(Pair::Tombstoned(nl, host.index)),
        Err(why) => {
            // Cannot tombstone (a name clash, the pod namespace unusable):
            // delete now, as DEL always did.
            eprintln!("flannel-rs: deleting {host_name} in the foreground: {why}");
            delete_host_end(&mut nl, host.index)?;
            Ok(Pair::Gone)
        }
    }
}

/// Frees CNI_IFNAME in the pod namespace: the pod end, down and renamed.
/// Only an interface of that name that is our host end's peer is touched:
/// each names the other's index in IFLA_LINK. One direction is not enough:
/// every pod's eth0 tends to have the same index, so a stale CNI_NETNS
/// (a recycled /proc/<pid>/ns/net) could show another pod's eth0 with our
/// peer's index; its IFLA_LINK names its own host veth, never ours.
fn tombstone_pod_end(
    att: &Attachment,
    host: u32,
    peer: Option<u32>,
    nonce: u64,
) -> Result<(), CniError> {
    let netns = match Netns::open(&att.netns) {
        Ok(n) => n,
        Err(NetnsError::Missing { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut pnl = netns.netlink()?;
    let pod = match pnl.link(&att.ifname) {
        Ok(l) => l,
        Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !is_pair(host, peer, pod.index, pod.peer) {
        // Not our pair's end: leave it; deleting the host end removes ours.
        return Ok(());
    }
    pnl.batch(vec![
        messages::set_link_down(pod.index),
        messages::rename_link(
            pod.index,
            &tombstone_name(&att.container_id, &att.ifname, End::Pod, nonce),
        ),
    ])?;
    Ok(())
}

/// Whether the host end (`host`, whose IFLA_LINK is `host_peer`) and the
/// pod-side link (`pod`, IFLA_LINK `pod_peer`) are the two ends of one veth.
fn is_pair(host: u32, host_peer: Option<u32>, pod: u32, pod_peer: Option<u32>) -> bool {
    host_peer == Some(pod) && pod_peer == Some(host)
}

fn delete_host_end(nl: &mut Netlink, index: u32) -> Result<(), NetlinkError> {
    match nl.request(messages::del_link_index(index)) {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(e),
    }
}

fn del_in_pod(att: &Attachment) -> Result<(), CniError> {
    if att.netns.is_empty() {
        return Ok(());
    }
    let netns = match Netns::open(&att.netns) {
        Ok(n) => n,
        // Gone: the kernel removed its interfaces with it.
        Err(NetnsError::Missing { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match netns.netlink()?.request(messages::del_link(&att.ifname)) {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_pair;

    #[test]
    fn pair_needs_both_directions() {
        assert!(is_pair(7, Some(2), 2, Some(7)));
        // Another pod's eth0 with our peer's index: its peer is its own veth.
        assert!(!is_pair(7, Some(2), 2, Some(9)));
        assert!(!is_pair(7, Some(3), 2, Some(7)));
        // Not a veth (no IFLA_LINK), or no peer known: not ours.
        assert!(!is_pair(7, None, 2, Some(7)));
        assert!(!is_pair(7, Some(2), 2, None));
    }
}
