//! Readiness: the node can take pods only once it holds a lease, the
//! datapath is programmed and subnet.env is written. Each part is set by the
//! lease loop; /readyz reports which ones are missing.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Readiness {
    lease: AtomicBool,
    datapath: AtomicBool,
    subnet_env: AtomicBool,
}

impl Readiness {
    pub fn set_lease(&self, v: bool) {
        self.lease.store(v, Ordering::Release);
    }

    pub fn set_datapath(&self, v: bool) {
        self.datapath.store(v, Ordering::Release);
    }

    pub fn set_subnet_env(&self, v: bool) {
        self.subnet_env.store(v, Ordering::Release);
    }

    /// The parts that are not in place yet (empty = ready).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.lease.load(Ordering::Acquire) {
            out.push("lease");
        }
        if !self.datapath.load(Ordering::Acquire) {
            out.push("datapath");
        }
        if !self.subnet_env.load(Ordering::Acquire) {
            out.push("subnet.env");
        }
        out
    }

    pub fn is_ready(&self) -> bool {
        self.missing().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_all_three() {
        let r = Readiness::default();
        assert_eq!(r.missing(), vec!["lease", "datapath", "subnet.env"]);
        r.set_lease(true);
        r.set_datapath(true);
        assert!(!r.is_ready());
        r.set_subnet_env(true);
        assert!(r.is_ready());
        r.set_datapath(false);
        assert_eq!(r.missing(), vec!["datapath"]);
    }
}
