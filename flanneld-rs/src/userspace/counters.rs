//! Datapath counters: plain atomics bumped by the engine threads and read
//! by /metrics at scrape time. One instance outlives engine restarts.

use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::Drop;

/// Packet direction: `Tx` = TUN → UDP (encapsulate), `Rx` = UDP → TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Tx,
    Rx,
}

impl Dir {
    pub fn label(self) -> &'static str {
        match self {
            Dir::Tx => "tx",
            Dir::Rx => "rx",
        }
    }
}

#[derive(Debug, Default)]
struct PerDir {
    packets: AtomicU64,
    bytes: AtomicU64,
    drops: [AtomicU64; Drop::ALL.len()],
}

#[derive(Debug, Default)]
pub struct Counters {
    tx: PerDir,
    rx: PerDir,
}

/// A consistent-enough copy for exposition and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// (direction, packets, bytes) delivered.
    pub ok: Vec<(Dir, u64, u64)>,
    /// (direction, reason, packets) dropped; every reason, zeros included.
    pub drops: Vec<(Dir, Drop, u64)>,
}

impl Snapshot {
    pub fn dropped(&self, dir: Dir, reason: Drop) -> u64 {
        self.drops
            .iter()
            .find(|(d, r, _)| *d == dir && *r == reason)
            .map_or(0, |x| x.2)
    }

    pub fn packets(&self, dir: Dir) -> u64 {
        self.ok.iter().find(|x| x.0 == dir).map_or(0, |x| x.1)
    }

    pub fn bytes(&self, dir: Dir) -> u64 {
        self.ok.iter().find(|x| x.0 == dir).map_or(0, |x| x.2)
    }
}

impl Counters {
    fn dir(&self, d: Dir) -> &PerDir {
        match d {
            Dir::Tx => &self.tx,
            Dir::Rx => &self.rx,
        }
    }

    /// Counts delivered packets (added once per batch).
    pub fn ok(&self, d: Dir, packets: u64, bytes: u64) {
        let c = self.dir(d);
        c.packets.fetch_add(packets, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count_drop(&self, d: Dir, reason: Drop, packets: u64) {
        self.dir(d).drops[reason.index()].fetch_add(packets, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for d in [Dir::Rx, Dir::Tx] {
            let c = self.dir(d);
            s.ok.push((
                d,
                c.packets.load(Ordering::Relaxed),
                c.bytes.load(Ordering::Relaxed),
            ));
            for r in Drop::ALL {
                s.drops
                    .push((d, r, c.drops[r.index()].load(Ordering::Relaxed)));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_direction_and_reason() {
        let c = Counters::default();
        c.ok(Dir::Rx, 3, 300);
        c.count_drop(Dir::Rx, Drop::WrongVni, 2);
        c.count_drop(Dir::Tx, Drop::NoPeer, 1);
        let s = c.snapshot();
        assert_eq!(s.packets(Dir::Rx), 3);
        assert_eq!(s.packets(Dir::Tx), 0);
        assert_eq!(s.dropped(Dir::Rx, Drop::WrongVni), 2);
        assert_eq!(s.dropped(Dir::Tx, Drop::WrongVni), 0);
        assert_eq!(s.dropped(Dir::Tx, Drop::NoPeer), 1);
        assert_eq!(s.drops.len(), 2 * Drop::ALL.len());
    }
}
