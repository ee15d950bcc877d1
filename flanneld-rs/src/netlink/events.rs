//! Kernel change notifications that should wake the reconciler: someone
//! deleted a link (our tunnel device), a route into the cluster network, or
//! a permanent neighbour/FDB entry (the only kind we install). Without them
//! a hand-made deletion waited for the next resync (10 s by default); with
//! them the loop reconciles as soon as the kernel says so, and the resync
//! stays as the backstop for anything not reported (or a lost message).
//!
//! `relevant` is pure (which messages matter); `subscribe` opens an
//! rtnetlink socket bound to the link, neighbour and IPv4 route multicast
//! groups of the caller's namespace and yields one wake-up per batch of
//! relevant messages. The filter is deliberately coarse (any link removal,
//! any permanent neighbour removal): a spurious wake-up costs one idempotent
//! reconcile pass, a missed one costs a resync period.

use std::os::fd::AsFd;
use std::path::Path;

use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;

use super::NetlinkError;

/// True when `msg` may mean that something we own was changed by someone
/// else: a link removed, a permanent neighbour or FDB entry removed, or an
/// IPv4 route into `cluster` removed.
pub fn relevant(msg: &RouteNetlinkMessage, cluster: Ipv4Net) -> bool {
    match msg {
        RouteNetlinkMessage::DelLink(_) => true,
        RouteNetlinkMessage::DelNeighbour(n) => n.header.state == NeighbourState::Permanent,
        RouteNetlinkMessage::DelRoute(r) => {
            if r.header.address_family != AddressFamily::Inet {
                return false;
            }
            r.attributes.iter().any(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => cluster.contains(d),
                _ => false,
            })
        }
        _ => false,
    }
}

/// Wake-ups from the kernel; each `next()` resolves once at least one
/// relevant message arrived since the last one (a burst is one wake-up).
pub struct KernelEvents {
    rx: mpsc::Receiver<()>,
}

impl KernelEvents {
    /// `None` once the subscription ended (the socket failed).
    pub async fn next(&mut self) -> Option<()> {
        self.rx.recv().await
    }

    /// Forgets a wake-up that is already pending (its messages will be
    /// covered by the reconcile about to run).
    pub fn drain(&mut self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl KernelEvents {
    /// Wake-ups fed by hand (the fake kernel's `wake`).
    pub fn channel() -> (mpsc::Sender<()>, KernelEvents) {
        let (tx, rx) = mpsc::channel(1);
        (tx, KernelEvents { rx })
    }
}

/// Subscribes to the caller's network namespace. Call inside a runtime.
pub fn subscribe(cluster: Ipv4Net) -> Result<KernelEvents, NetlinkError> {
    subscribe_in(None, cluster)
}

/// Subscribes to the namespace at `netns` (`None`: the caller's). As in
/// `Netlink::connect_in_netns`, the socket is opened on a short-lived
/// thread, so no caller thread changes namespace.
pub fn subscribe_in(netns: Option<&Path>, cluster: Ipv4Net) -> Result<KernelEvents, NetlinkError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
    let open = move || {
        rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
        ])
    };
    let (conn, _handle, mut messages) = match netns {
        None => open().map_err(NetlinkError::Open)?,
        Some(path) => {
            let shown = path.display().to_string();
            let path = path.to_owned();
            std::thread::spawn(move || {
                let _rt = rt.enter();
                let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string())?;
                open().map_err(|e| e.to_string())
            })
            .join()
            .map_err(|_| NetlinkError::Netns {
                path: shown.clone(),
                reason: "the thread opening the socket panicked".into(),
            })?
            .map_err(|reason| NetlinkError::Netns {
                path: shown,
                reason,
            })?
        }
    };
    tokio::spawn(conn);
    // Capacity 1: a wake-up already pending covers every later message.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            if let NetlinkPayload::InnerMessage(inner) = &msg.payload {
                if relevant(inner, cluster) {
                    match tx.try_send(()) {
                        Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                        Err(mpsc::error::TrySendError::Closed(())) => return,
                    }
                }
            }
        }
    });
    Ok(KernelEvents { rx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::neighbour::NeighbourMessage;
    use netlink_packet_route::route::RouteMessage;

    fn cluster() -> Ipv4Net {
        "10.244.0.0/16".parse().unwrap()
    }

    fn route(family: AddressFamily, dst: &str) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.address_family = family;
        r.header.destination_prefix_length = 24;
        r.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                dst.parse().unwrap(),
            )));
        r
    }

    fn neigh(state: NeighbourState) -> NeighbourMessage {
        let mut n = NeighbourMessage::default();
        n.header.state = state;
        n
    }

    #[test]
    fn deletions_of_what_we_own_wake_the_reconciler() {
        assert!(relevant(
            &RouteNetlinkMessage::DelLink(LinkMessage::default()),
            cluster()
        ));
        assert!(relevant(
            &RouteNetlinkMessage::DelNeighbour(neigh(NeighbourState::Permanent)),
            cluster()
        ));
        assert!(relevant(
            &RouteNetlinkMessage::DelRoute(route(AddressFamily::Inet, "10.244.3.0")),
            cluster()
        ));
    }

    #[test]
    fn everything_else_does_not() {
        // Additions (our own reconcile makes them), ARP churn on the
        // underlay, routes outside the cluster network.
        assert!(!relevant(
            &RouteNetlinkMessage::NewLink(LinkMessage::default()),
            cluster()
        ));
        assert!(!relevant(
            &RouteNetlinkMessage::DelNeighbour(neigh(NeighbourState::Stale)),
            cluster()
        ));
        assert!(!relevant(
            &RouteNetlinkMessage::NewNeighbour(neigh(NeighbourState::Permanent)),
            cluster()
        ));
        assert!(!relevant(
            &RouteNetlinkMessage::DelRoute(route(AddressFamily::Inet, "192.0.2.0")),
            cluster()
        ));
        assert!(!relevant(
            &RouteNetlinkMessage::NewRoute(route(AddressFamily::Inet, "10.244.3.0")),
            cluster()
        ));
    }
}
