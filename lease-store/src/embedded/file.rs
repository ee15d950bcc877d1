//! The embedded store's file I/O: an exclusive flock on a sidecar lock file
//! around every read-modify-write, and atomic replacement (temp file in the
//! same directory, fsync, rename) so that lock-free readers never see a
//! half-written file. Blocking: callers run it on tokio's blocking pool.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::state::State;
use crate::store::{Result, StoreError};

/// The lock file next to the store file (`leases.json` -> `leases.json.lock`).
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn io(op: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// Holds the exclusive lock until dropped (closing the descriptor releases
/// the flock). Each operation opens its own descriptor: flock excludes
/// other descriptors, even in the same process, but not the same one.
struct Locked(#[allow(dead_code)] File);

fn lock(path: &Path) -> Result<Locked> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(path))
        .map_err(io("open the lease store lock file"))?;
    f.lock().map_err(io("lock the lease store file"))?;
    Ok(Locked(f))
}

/// Reads the state without the lock (safe: writers replace the file
/// atomically). `ConfigMissing` when the file does not exist.
pub fn read(path: &Path) -> Result<State> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::ConfigMissing(path.display().to_string()))
        }
        Err(e) => {
            return Err(StoreError::Io {
                op: "read the lease store file",
                source: e,
            })
        }
    };
    let state: State = serde_json::from_str(&text).map_err(|e| StoreError::Decode {
        key: path.display().to_string(),
        reason: e.to_string(),
    })?;
    state.check_format().map_err(|e| StoreError::Decode {
        key: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(state)
}

/// Replaces the file atomically.
pub fn write(path: &Path, state: &State) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let text = serde_json::to_vec(state).map_err(|e| StoreError::Decode {
        key: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io("write the lease store file"))
}

/// Runs `f` on the state under the lock, writing the state back when `f`
/// changed it (even when `f` then fails: an expiry it performed stands).
pub fn update<T>(path: &Path, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
    let _guard = lock(path)?;
    let mut state = read(path)?;
    state.dirty = false;
    let out = f(&mut state);
    if state.dirty {
        write(path, &state)?;
    }
    out
}

/// Creates the file with `state`, or replaces only its config when it
/// exists (leases survive a config rewrite).
pub fn init(path: &Path, config: &str) -> Result<()> {
    let _guard = lock(path)?;
    let state = match read(path) {
        Ok(mut s) => {
            s.config = config.to_string();
            s
        }
        Err(StoreError::ConfigMissing(_)) => State::new(config.to_string()),
        Err(e) => return Err(e),
    };
    write(path, &state)
}

/// A cheap fingerprint of the file: inode (each write is a new file),
/// modification time and size. Watchers re-read only when it changes.
pub fn stamp(path: &Path) -> Option<(u64, i64, i64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}
