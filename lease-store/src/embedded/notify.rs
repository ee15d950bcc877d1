//! Wakes a watcher when the store file is replaced. inotify watches the
//! file's DIRECTORY: writers rename a temp file over the store file, so a
//! watch on the file itself would stay on the old, unlinked inode.
//! Events are filtered to the store file's name (the lock file and the
//! writers' temp files live in the same directory).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot create an inotify instance ({0}); raise fs.inotify.max_user_instances if it is exhausted (watchers poll meanwhile)")]
    Init(Errno),
    #[error("cannot watch directory {dir} with inotify ({source}); check it exists and fs.inotify.max_user_watches (watchers poll meanwhile)")]
    Watch { dir: String, source: Errno },
    #[error("cannot register the inotify descriptor with tokio: {0}")]
    Register(std::io::Error),
    #[error("reading inotify events failed: {0}")]
    Read(std::io::Error),
    #[error("the store's directory was removed or unmounted: no more inotify events")]
    DirGone,
}

/// What one batch of inotify events means for the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing about the store file: keep waiting.
    Unrelated,
    /// The store file was replaced, written or removed (or events were
    /// lost): re-read it.
    Changed,
    /// The directory watch ended: fall back to polling.
    Gone,
}

/// The events a watcher subscribes to: a rename onto the name (the
/// writers' path), a write in place or a creation (an operator's editor,
/// `init` on a new file), a removal (the watch then ends with an error).
pub fn watch_flags() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ONLYDIR
}

/// Classifies a batch of (mask, name) pairs read from the directory watch.
pub fn classify<'a>(
    events: impl IntoIterator<Item = (AddWatchFlags, Option<&'a OsStr>)>,
    file_name: &OsStr,
) -> Verdict {
    let mut verdict = Verdict::Unrelated;
    for (mask, name) in events {
        if mask.intersects(
            AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_UNMOUNT,
        ) {
            return Verdict::Gone;
        }
        // The kernel dropped events: any of them may have been ours.
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) || name == Some(file_name) {
            verdict = Verdict::Changed;
        }
    }
    verdict
}

/// tokio's AsyncFd wants `AsRawFd`; nix's Inotify offers `AsFd`.
struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// An inotify watch on the directory of one store file.
pub struct DirNotify {
    fd: AsyncFd<Fd>,
    name: OsString,
}

impl DirNotify {
    /// Starts watching; must be called inside a tokio runtime. Changes made
    /// after this returns are reported by [`DirNotify::changed`].
    pub fn new(path: &Path) -> Result<Self, NotifyError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().unwrap_or_default().to_os_string();
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(NotifyError::Init)?;
        ino.add_watch(dir, watch_flags())
            .map_err(|source| NotifyError::Watch {
                dir: dir.display().to_string(),
                source,
            })?;
        // SAFETY: `Fd` owns the inotify descriptor (an OwnedFd inside
        // `Inotify`) and never replaces it, so the raw fd stays open and the
        // same for the AsyncFd's whole life, as `register` requires.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(ino), Interest::READABLE) }
            .map_err(|e| NotifyError::Register(e.into()))?;
        Ok(DirNotify { fd, name })
    }

    /// Waits until the store file changed. Cancel-safe: dropping the future
    /// loses no event that concerns the file (unread events stay queued).
    pub async fn changed(&self) -> Result<(), NotifyError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(NotifyError::Read)?;
            let read =
                guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from));
            let events = match read {
                Ok(Ok(events)) => events,
                Ok(Err(e)) => return Err(NotifyError::Read(e)),
                // Spurious readiness: try_io cleared it; wait again.
                Err(_would_block) => continue,
            };
            let batch = events.iter().map(|e| (e.mask, e.name.as_deref()));
            match classify(batch, &self.name) {
                Verdict::Unrelated => continue,
                Verdict::Changed => return Ok(()),
                Verdict::Gone => return Err(NotifyError::DirGone),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn only_the_store_file_counts() {
        let f = OsStr::new("leases.json");
        let lock = (AddWatchFlags::IN_CLOSE_WRITE, name("leases.json.lock"));
        let tmp = (AddWatchFlags::IN_CREATE, name(".leases.json.tmp.42"));
        let tmp_done = (AddWatchFlags::IN_CLOSE_WRITE, name(".leases.json.tmp.42"));
        assert_eq!(classify([lock, tmp, tmp_done], f), Verdict::Unrelated);
        let renamed = (AddWatchFlags::IN_MOVED_TO, name("leases.json"));
        assert_eq!(classify([lock, tmp, renamed], f), Verdict::Changed);
        assert_eq!(classify([], f), Verdict::Unrelated);
    }

    #[test]
    fn overflow_means_reread_and_a_lost_directory_means_poll() {
        let f = OsStr::new("leases.json");
        assert_eq!(
            classify([(AddWatchFlags::IN_Q_OVERFLOW, None)], f),
            Verdict::Changed
        );
        let renamed = (AddWatchFlags::IN_MOVED_TO, name("leases.json"));
        assert_eq!(
            classify([renamed, (AddWatchFlags::IN_IGNORED, None)], f),
            Verdict::Gone
        );
        assert_eq!(
            classify([(AddWatchFlags::IN_DELETE_SELF, None)], f),
            Verdict::Gone
        );
    }

    #[tokio::test]
    async fn a_rename_onto_the_file_wakes_and_other_names_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        let n = DirNotify::new(&path).unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(200), n.changed()).await;
        assert!(quiet.is_err(), "an unrelated file woke the watcher");
        let tmp = dir.path().join(".leases.json.tmp");
        std::fs::write(&tmp, b"{}").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        // Generous bound: the event is queued already; this only guards
        // against a hang.
        tokio::time::timeout(std::time::Duration::from_secs(30), n.changed())
            .await
            .expect("no event for the rename within 30 s")
            .unwrap();
    }
}
