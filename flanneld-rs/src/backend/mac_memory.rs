//! The VTEP MAC of a `flannel.<VNI>` device this daemon adopted with a MAC
//! it did not derive (Go flanneld picks a random one), remembered in a small
//! file. Peers (Go ones included) hold FDB and neighbour entries for that
//! MAC, so a device deleted while the daemon is down (`ip link del`, a
//! network restart) comes back with the same MAC and no peer has to change
//! anything. The file lives next to subnet.env by default (`/run/flannel`,
//! which the DaemonSet mounts): it outlives daemon restarts; after a reboot
//! the device is gone with it and a fresh device gets the derived MAC.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reconcile::Mac;

#[derive(Debug, thiserror::Error)]
pub enum MacMemoryError {
    #[error("writing the adopted VTEP MAC to {path}: {source} (a device deleted while the daemon is down will come back with the derived MAC)")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "reading the adopted VTEP MAC from {path}: {reason} (ignored; the derived MAC is used)"
    )]
    Read { path: String, reason: String },
}

/// What is remembered: the MAC only counts for the same device identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    device: String,
    vni: u32,
    local: Ipv4Addr,
    mac: String,
}

/// The identity a remembered MAC belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKey<'a> {
    pub device: &'a str,
    pub vni: u32,
    pub local: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacMemory {
    path: PathBuf,
}

impl MacMemory {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MacMemory { path: path.into() }
    }

    /// `vtep-mac.json` in the directory of `subnet_file` (the default).
    pub fn beside(subnet_file: &Path) -> Self {
        let dir = subnet_file.parent().unwrap_or_else(|| Path::new("."));
        MacMemory::new(dir.join("vtep-mac.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The MAC remembered for `key`; `Ok(None)` when there is none (no file,
    /// or one for another device, VNI or address).
    pub fn recall(&self, key: DeviceKey<'_>) -> Result<Option<Mac>, MacMemoryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.read_error(e.to_string())),
        };
        let entry: Entry =
            serde_json::from_str(&text).map_err(|e| self.read_error(e.to_string()))?;
        if entry.device != key.device || entry.vni != key.vni || entry.local != key.local {
            return Ok(None);
        }
        let mac: Mac = entry
            .mac
            .parse()
            .map_err(|e: crate::reconcile::MacParseError| self.read_error(e.to_string()))?;
        Ok(Some(mac))
    }

    /// Remembers `mac` for `key` (temp file + rename: never half written).
    pub fn remember(&self, key: DeviceKey<'_>, mac: Mac) -> Result<(), MacMemoryError> {
        let entry = Entry {
            device: key.device.to_string(),
            vni: key.vni,
            local: key.local,
            mac: mac.to_string(),
        };
        if self.recall(key).ok().flatten() == Some(mac) {
            return Ok(());
        }
        let err = |source| MacMemoryError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        let body = serde_json::to_string(&entry).unwrap_or_default();
        f.write_all(body.as_bytes()).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    /// Drops the memory (the device now carries the derived MAC).
    pub fn forget(&self) -> Result<(), MacMemoryError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MacMemoryError::Write {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }

    fn read_error(&self, reason: String) -> MacMemoryError {
        MacMemoryError::Read {
            path: self.path.display().to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(local: [u8; 4]) -> DeviceKey<'static> {
        DeviceKey {
            device: "flannel.1",
            vni: 1,
            local: Ipv4Addr::from(local),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fct-macmem-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn remembers_per_device_identity_and_survives_a_new_instance() {
        let dir = tmp("roundtrip");
        let mem = MacMemory::beside(&dir.join("subnet.env"));
        assert_eq!(mem.path(), dir.join("vtep-mac.json"));
        assert_eq!(mem.recall(key([198, 51, 100, 1])).unwrap(), None);
        let mac: Mac = "0e:1f:2a:3b:4c:5d".parse().unwrap();
        mem.remember(key([198, 51, 100, 1]), mac).unwrap();
        let again = MacMemory::new(dir.join("vtep-mac.json"));
        assert_eq!(again.recall(key([198, 51, 100, 1])).unwrap(), Some(mac));
        // Another address (the node was renumbered) or VNI: not this device.
        assert_eq!(again.recall(key([198, 51, 100, 2])).unwrap(), None);
        let mut vni2 = key([198, 51, 100, 1]);
        vni2.vni = 2;
        assert_eq!(again.recall(vni2).unwrap(), None);
        again.forget().unwrap();
        assert_eq!(again.recall(key([198, 51, 100, 1])).unwrap(), None);
        again.forget().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tmp("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vtep-mac.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = MacMemory::new(&path)
            .recall(key([198, 51, 100, 1]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vtep-mac.json"), "{e}");
        std::fs::write(
            &path,
            r#"{"device":"flannel.1","vni":1,"local":"198.51.100.1","mac":"zz"}"#,
        )
        .unwrap();
        assert!(MacMemory::new(&path)
            .recall(key([198, 51, 100, 1]))
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
