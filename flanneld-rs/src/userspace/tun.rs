//! Creating the TUN device: one fd per queue, with virtio-net offloads
//! (the kernel hands us TCP super-packets and accepts coalesced ones) when
//! the kernel allows, falling back step by step when it does not.

use std::io;

use tun_rs::{DeviceBuilder, SyncDevice};

/// The device as opened.
pub struct Tun {
    pub queues: Vec<SyncDevice>,
    /// IFF_VNET_HDR + TUNSETOFFLOAD (TSO/CSUM) negotiated.
    pub offload: bool,
}

fn open(name: &str, mtu: u16, offload: bool, multi_queue: bool) -> io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .offload(offload)
        .multi_queue(multi_queue)
        // The default (500) overflows under TSO bursts split into segments.
        .tx_queue_len(1000)
        .enable(true)
        .build_sync()
}

/// Creates `name` in the calling thread's network namespace with up to
/// `queues` queues. Offloads and extra queues are optimisations: when the
/// kernel refuses them we run with less rather than not at all.
pub fn create(name: &str, mtu: u16, queues: usize, want_offload: bool) -> io::Result<Tun> {
    let multi = queues > 1;
    let (first, offload) = match open(name, mtu, want_offload, multi) {
        Ok(d) => (d, want_offload),
        Err(e) if want_offload => {
            tracing::warn!("TUN offloads refused ({e}); running without GSO/GRO");
            (open(name, mtu, false, multi)?, false)
        }
        Err(e) => return Err(e),
    };
    let mut out = vec![first];
    while out.len() < queues {
        match out[0].try_clone() {
            Ok(q) => out.push(q),
            Err(e) => {
                tracing::warn!("TUN queue {} refused ({e}); using {}", out.len(), out.len());
                break;
            }
        }
    }
    Ok(Tun {
        queues: out,
        offload,
    })
}
