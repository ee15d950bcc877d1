//! DEL: remove the veth pair and release the address. Works when the pod
//! namespace is gone or CNI_NETNS is empty, and when repeated; every step is
//! tried even if an earlier one failed.

use crate::config::Config;
use crate::env::Attachment;
use crate::error::CniError;
use crate::ipam::Store;
use crate::naming::host_veth_name;
use crate::netlink::{messages, Netlink, NetlinkError};
use crate::netns::{Netns, NetnsError};

pub fn del(cfg: &Config, att: &Attachment) -> Result<(), CniError> {
    let mut errors: Vec<CniError> = Vec::new();

    // Deleting the host end removes the pod end with it, wherever that is;
    // if the namespace died, the kernel already removed both.
    let host = host_veth_name(&att.container_id, &att.ifname);
    let deleted = Netlink::open().and_then(|mut nl| nl.request(messages::del_link(&host)));
    match deleted {
        Ok(_) => {}
        Err(NetlinkError::Kernel { errno, .. }) if errno == libc::ENODEV => {
            // No pair under our name (e.g. made by flannel's bridge plugin
            // before a migration): remove the pod end by its name instead.
            if let Err(e) = del_in_pod(att) {
                errors.push(e);
            }
        }
        Err(e) => errors.push(e.into()),
    }

    match Store::open(&cfg.data_dir, &cfg.name)
        .and_then(|s| s.release(&att.container_id, &att.ifname))
    {
        Ok(_) => {}
        Err(e) => errors.push(e.into()),
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
