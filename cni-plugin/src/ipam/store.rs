//! host-local's on-disk layout under `<dataDir>/<network>/`: one file per
//! reserved IP named by the address and holding `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.0` for round-robin, and `lock` for flock. All access
//! happens while holding the exclusive lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{code, CniError};

const LOCK_FILE: &str = "lock";
const LAST_RESERVED: &str = "last_reserved_ip.0";
/// host-local's separator between container ID and ifname.
const LINE_BREAK: &str = "\r\n";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("IPAM store {path}: {op} failed: {source}; check that the data directory is writable by root")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        CniError::new(code::IO_FAILURE, e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    /// Empty for reservations written by old host-local (ID only).
    pub ifname: String,
}

impl Reservation {
    pub fn belongs_to(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && (self.ifname.is_empty() || self.ifname == ifname)
    }
}

/// An open, locked store. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io { path, op, source }
}

/// Parses a reservation file's contents: `<id>\r\n<ifname>`, or `<id>` alone.
pub fn parse_owner(text: &str) -> (String, String) {
    let mut lines = text.lines().map(str::trim);
    let id = lines.next().unwrap_or_default().to_string();
    let ifname = lines.next().unwrap_or_default().to_string();
    (id, ifname)
}

/// Reads a reservation file. A reservation is one short line or two, so
/// one read into a stack buffer usually gets all of it: open, read, close,
/// without the size query and the end-of-file read of `fs::read`.
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = [0u8; 256];
    let n = f.read(&mut buf)?;
    let mut out = buf[..n].to_vec();
    if n == buf.len() {
        f.read_to_end(&mut out)?;
    }
    Ok(out)
}

/// Replaces a small file's contents in place. `fs::write` truncates to zero
/// first, and on ext4 a truncate-to-zero followed by a write frees and
/// reallocates the block and forces writeback at close (auto_da_alloc):
/// about 0.3 ms per ADD here. Overwriting and then trimming to the new
/// length avoids both. A crash between the two can leave a longer, mixed
/// text; that file is only the round-robin hint (read leniently, and
/// host-local's own truncating write can leave it empty just as well).
fn overwrite(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all_at(data, 0)?;
    // Longer contents of an earlier write must not stay behind.
    if f.metadata()?.len() != data.len() as u64 {
        f.set_len(data.len() as u64)?;
    }
    Ok(())
}

impl Store {
    /// Opens `<data_dir>/<network>`, creating it, and takes the exclusive lock
    /// (blocking: concurrent ADDs and DELs queue here).
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, StoreError> {
        let dir = data_dir.join(network);
        let lock_path = dir.join(LOCK_FILE);
        let open_lock = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        };
        // The directory exists on every ADD but the first: try the lock
        // file first and create the directory only when it is missing.
        let lock = match open_lock() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(io_err(&dir, "create directory"))?;
                open_lock()
            }
            other => other,
        }
        .map_err(io_err(&lock_path, "open lock file"))?;
        lock.lock().map_err(io_err(&lock_path, "flock"))?;
        Ok(Store { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every reservation in the directory. Files whose name is not an IPv4
    /// address (lock, last_reserved_ip.*, IPv6 ones) are skipped.
    pub fn list(&self) -> Result<Vec<Reservation>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir, "list"))? {
            let entry = entry.map_err(io_err(&self.dir, "list"))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let text = match read_small(&path) {
                Ok(t) => t,
                // Released by someone not holding our lock (an old tool): skip.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path, "read reservation")(e)),
            };
            let (container_id, ifname) = parse_owner(&String::from_utf8_lossy(&text));
            out.push(Reservation {
                ip,
                container_id,
                ifname,
            });
        }
        Ok(out)
    }

    pub fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Writes the reservation file (exclusively: an existing file means the
    /// address is taken) and moves the round-robin position.
    pub fn reserve(
        &self,
        ip: Ipv4Addr,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), StoreError> {
        let path = self.dir.join(ip.to_string());
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path, "create reservation"))?;
        // No fsync, like host-local: the file's existence is the
        // reservation, and pods do not survive the crash it would guard.
        let written = f.write_all(format!("{container_id}{LINE_BREAK}{ifname}").as_bytes());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io_err(&path, "write reservation")(e));
        }
        let last = self.dir.join(LAST_RESERVED);
        overwrite(&last, ip.to_string().as_bytes()).map_err(io_err(&last, "write last_reserved_ip"))
    }

    pub fn release_ip(&self, ip: Ipv4Addr) -> Result<(), StoreError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, "remove reservation")(e)),
        }
    }

    /// Releases whatever `container_id` + `ifname` holds; returns the
    /// addresses freed (none is fine: DEL may repeat).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, StoreError> {
        let mut freed = Vec::new();
        for r in self.list()? {
            if r.belongs_to(container_id, ifname) {
                self.release_ip(r.ip)?;
                freed.push(r.ip);
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use crate::ipam::Pool;

    #[test]
    fn reserve_list_release_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "net1").unwrap();
        let ip = Ipv4Addr::new(10, 244, 7, 2);
        s.reserve(ip, "ctr1", "eth0").unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("net1/10.244.7.2")).unwrap(),
            "ctr1\r\neth0"
        );
        assert_eq!(s.last_reserved(), Some(ip));
        // The same address twice is refused by the filesystem.
        assert!(s.reserve(ip, "ctr2", "eth0").is_err());
        s.reserve(Ipv4Addr::new(10, 244, 7, 3), "ctr1", "net1")
            .unwrap();
        assert_eq!(s.list().unwrap().len(), 2);
        // Release matches container ID and ifname.
        assert_eq!(s.release("ctr1", "eth0").unwrap(), vec![ip]);
        assert!(s.release("ctr1", "eth0").unwrap().is_empty());
        assert_eq!(s.list().unwrap().len(), 1);
        let mut names: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["10.244.7.3", "last_reserved_ip.0", "lock"]);
    }

    #[test]
    fn allocation_round_robin_through_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "n").unwrap();
        let pool = Pool::new("10.244.7.1/29".parse().unwrap()).unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            let used: HashSet<_> = s.list().unwrap().into_iter().map(|r| r.ip).collect();
            let ip = pool.allocate(&used, s.last_reserved(), None).unwrap();
            s.reserve(ip, &format!("c{i}"), "eth0").unwrap();
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, [2, 3, 4, 5, 6]);
        s.release("c1", "eth0").unwrap();
        let used: HashSet<_> = s.list().unwrap().into_iter().map(|r| r.ip).collect();
        // Round-robin: .3 is free again but .7 is not reachable (broadcast), so
        // the search wraps past the gateway to .3.
        assert_eq!(
            pool.allocate(&used, s.last_reserved(), None)
                .unwrap()
                .octets()[3],
            3
        );
    }

    #[test]
    fn last_reserved_shrinks_and_grows_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "n").unwrap();
        let last = tmp.path().join("n").join(LAST_RESERVED);
        // 11 characters, then 10: the old tail must not survive the overwrite.
        s.reserve(Ipv4Addr::new(10, 244, 7, 23), "a", "eth0")
            .unwrap();
        s.reserve(Ipv4Addr::new(10, 244, 7, 9), "b", "eth0")
            .unwrap();
        assert_eq!(fs::read_to_string(&last).unwrap(), "10.244.7.9");
        assert_eq!(s.last_reserved(), Some(Ipv4Addr::new(10, 244, 7, 9)));
        s.reserve(Ipv4Addr::new(10, 244, 7, 100), "c", "eth0")
            .unwrap();
        assert_eq!(fs::read_to_string(&last).unwrap(), "10.244.7.100");
    }

    #[test]
    fn long_reservation_files_are_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), "n").unwrap();
        // Longer than read_small's first buffer.
        let id = "c".repeat(300);
        s.reserve(Ipv4Addr::new(10, 244, 7, 2), &id, "eth0")
            .unwrap();
        let list = s.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].container_id, id);
        assert_eq!(list[0].ifname, "eth0");
    }

    #[test]
    fn open_creates_missing_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("a/b"), "n").unwrap();
        assert!(s.dir().join(LOCK_FILE).is_file());
        drop(s);
        // Opening again finds the lock file directly.
        Store::open(&tmp.path().join("a/b"), "n").unwrap();
    }

    #[test]
    fn legacy_id_only_files() {
        assert_eq!(parse_owner("abc"), ("abc".into(), String::new()));
        assert_eq!(parse_owner("abc\r\neth1"), ("abc".into(), "eth1".into()));
        let r = Reservation {
            ip: Ipv4Addr::LOCALHOST,
            container_id: "abc".into(),
            ifname: String::new(),
        };
        assert!(r.belongs_to("abc", "eth0"));
        assert!(!r.belongs_to("abd", "eth0"));
    }
}
