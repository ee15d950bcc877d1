//! The embedded store's file content and its transitions, as pure data:
//! expire, put, delete, compact, and "what changed since revision r". The
//! file locking and atomic writes live in `file.rs`.
//!
//! ```json
//! {
//!   "format": 1,
//!   "config": "{\"Network\":\"10.244.0.0/16\"}",
//!   "revision": 7,
//!   "compacted": 0,
//!   "leases": {
//!     "10.244.3.0-24": {"attrs": {"PublicIP":"192.0.2.1","PublicIPv6":null,...},
//!                       "expires_ms": 1767225600000, "revision": 7}
//!   },
//!   "log": [{"revision": 7, "op": "put", "key": "10.244.3.0-24", "attrs": {...}, "expires_ms": ...}]
//! }
//! ```
//!
//! `attrs` is flannel's lease JSON; `expires_ms` is Unix time in
//! milliseconds, `null` for a reservation. Every put or delete bumps
//! `revision` and is appended to `log`; the log keeps the last
//! `log_limit` changes, and `compacted` is the newest revision dropped from
//! it: a watch from an older revision gets a snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::key;
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{LeaseEvent, Revision};

/// The file format version this code reads and writes.
pub const FORMAT: u32 = 1;
/// How many changes the log keeps by default.
pub const DEFAULT_LOG_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("lease store file has format {found}, this build reads format {FORMAT}: upgrade flanneld-rs or re-create the file")]
    Format { found: u32 },
    #[error("lease store file holds a bad subnet key {key:?}: {source}")]
    Key { key: String, source: key::KeyError },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// net-conf.json, verbatim.
    pub config: String,
    pub revision: Revision,
    pub compacted: Revision,
    pub leases: BTreeMap<String, Record>,
    pub log: VecDeque<Change>,
    /// Set by every mutation: the file must be written back.
    #[serde(skip)]
    pub dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub attrs: LeaseAttrs,
    pub expires_ms: Option<u64>,
    /// The revision this key was last put at.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Delete,
}

/// One logged change; a delete carries the attributes the key had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub revision: Revision,
    pub op: Op,
    pub key: String,
    pub attrs: LeaseAttrs,
    pub expires_ms: Option<u64>,
}

/// What a watcher at revision `from` gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// The changes after `from` (possibly none), up to `revision`.
    Events {
        events: Vec<LeaseEvent>,
        revision: Revision,
    },
    /// `from` is older than the log: the whole table.
    Snapshot {
        leases: Vec<Lease>,
        revision: Revision,
    },
}

pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn to_lease(
    key: &str,
    attrs: &LeaseAttrs,
    expires_ms: Option<u64>,
    revision: Revision,
) -> Result<Lease, StateError> {
    let (subnet, ipv6_subnet) = key::decode(key).map_err(|source| StateError::Key {
        key: key.to_string(),
        source,
    })?;
    Ok(Lease {
        subnet,
        ipv6_subnet,
        attrs: attrs.clone(),
        expiration: expires_ms.map(from_ms),
        revision,
    })
}

impl State {
    pub fn new(config: String) -> Self {
        State {
            format: FORMAT,
            config,
            revision: 0,
            compacted: 0,
            leases: BTreeMap::new(),
            log: VecDeque::new(),
            dirty: true,
        }
    }

    pub fn check_format(&self) -> Result<(), StateError> {
        if self.format == FORMAT {
            Ok(())
        } else {
            Err(StateError::Format { found: self.format })
        }
    }

    /// Removes the leases whose time is up, logging each removal.
    pub fn expire(&mut self, now: SystemTime, log_limit: usize) {
        let now = to_ms(now);
        let due: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, r)| r.expires_ms.is_some_and(|e| e <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.delete(&k, log_limit);
        }
    }

    /// When the next lease runs out, if any does.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.leases
            .values()
            .filter_map(|r| r.expires_ms)
            .min()
            .map(from_ms)
    }

    /// Writes a key (create or update) at a new revision.
    pub fn put(
        &mut self,
        key: &str,
        attrs: &LeaseAttrs,
        expires: Option<SystemTime>,
        log_limit: usize,
    ) -> Revision {
        self.revision += 1;
        let expires_ms = expires.map(to_ms);
        self.leases.insert(
            key.to_string(),
            Record {
                attrs: attrs.clone(),
                expires_ms,
                revision: self.revision,
            },
        );
        self.append(
            Change {
                revision: self.revision,
                op: Op::Put,
                key: key.to_string(),
                attrs: attrs.clone(),
                expires_ms,
            },
            log_limit,
        );
        self.revision
    }

    /// Moves a key's expiration without a new revision (as an etcd lease
    /// keep-alive: watchers see nothing).
    pub fn touch(&mut self, key: &str, expires: SystemTime) -> bool {
        match self.leases.get_mut(key) {
            Some(r) => {
                r.expires_ms = Some(to_ms(expires));
                self.dirty = true;
                true
            }
            None => false,
        }
    }

    /// Deletes a key at a new revision; the log keeps its attributes.
    pub fn delete(&mut self, key: &str, log_limit: usize) -> Option<Record> {
        let old = self.leases.remove(key)?;
        self.revision += 1;
        self.append(
            Change {
                revision: self.revision,
                op: Op::Delete,
                key: key.to_string(),
                attrs: old.attrs.clone(),
                expires_ms: old.expires_ms,
            },
            log_limit,
        );
        Some(old)
    }

    fn append(&mut self, c: Change, log_limit: usize) {
        self.log.push_back(c);
        while self.log.len() > log_limit {
            if let Some(dropped) = self.log.pop_front() {
                self.compacted = dropped.revision;
            }
        }
        self.dirty = true;
    }

    /// Drops the whole change log.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.revision;
        self.dirty = true;
    }

    /// Every lease and reservation.
    pub fn leases(&self) -> Result<Vec<Lease>, StateError> {
        self.leases
            .iter()
            .map(|(k, r)| to_lease(k, &r.attrs, r.expires_ms, r.revision))
            .collect()
    }

    /// The key holding `subnet` or `ipv6_subnet` (either family), if any.
    pub fn holder(
        &self,
        subnet: Option<Ipv4Net>,
        ipv6_subnet: Option<Ipv6Net>,
    ) -> Option<(&String, &Record)> {
        self.leases.iter().find(|(k, _)| match key::decode(k) {
            Ok((a, b)) => (a.is_some() && a == subnet) || (b.is_some() && b == ipv6_subnet),
            Err(_) => false,
        })
    }

    /// The changes after `from`, leaving out `own` (a key).
    pub fn since(&self, from: Revision, own: Option<&str>) -> Result<Since, StateError> {
        if from < self.compacted {
            let leases = self
                .leases()?
                .into_iter()
                .filter(|l| own.is_none_or(|o| l.key() != o))
                .collect();
            return Ok(Since::Snapshot {
                leases,
                revision: self.revision,
            });
        }
        let mut events = Vec::new();
        for c in self.log.iter().filter(|c| c.revision > from) {
            if own == Some(c.key.as_str()) {
                continue;
            }
            let l = to_lease(&c.key, &c.attrs, c.expires_ms, c.revision)?;
            events.push(match c.op {
                Op::Put => LeaseEvent::Added(l),
                Op::Delete => LeaseEvent::Removed(l),
            });
        }
        Ok(Since::Events {
            events,
            revision: self.revision.max(from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(ip: &str) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: ip.parse().unwrap(),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI":1,"VtepMAC":"0a:58:00:00:00:01"})),
            backend_v6_data: None,
        }
    }

    fn keys(ev: &[LeaseEvent]) -> Vec<String> {
        ev.iter()
            .map(|e| match e {
                LeaseEvent::Added(l) => format!("+{}", l.key()),
                LeaseEvent::Removed(l) => format!("-{}", l.key()),
            })
            .collect()
    }

    #[test]
    fn put_delete_and_since() {
        let mut s = State::new("{}".into());
        let now = SystemTime::now();
        assert_eq!(s.put("10.5.1.0-24", &attrs("192.0.2.1"), Some(now), 10), 1);
        assert_eq!(s.put("10.5.2.0-24", &attrs("192.0.2.2"), None, 10), 2);
        let old = s.delete("10.5.1.0-24", 10).unwrap();
        assert_eq!(old.attrs, attrs("192.0.2.1"));
        assert!(s.delete("10.5.1.0-24", 10).is_none());
        assert_eq!(s.revision, 3);
        match s.since(0, None).unwrap() {
            Since::Events { events, revision } => {
                assert_eq!(revision, 3);
                assert_eq!(
                    keys(&events),
                    ["+10.5.1.0-24", "+10.5.2.0-24", "-10.5.1.0-24"]
                );
                // The removal carries the attributes the key had.
                assert!(
                    matches!(&events[2], LeaseEvent::Removed(l) if l.attrs == attrs("192.0.2.1"))
                );
            }
            other => panic!("{other:?}"),
        }
        match s.since(1, Some("10.5.1.0-24")).unwrap() {
            Since::Events { events, .. } => assert_eq!(keys(&events), ["+10.5.2.0-24"]),
            other => panic!("{other:?}"),
        }
        match s.since(3, None).unwrap() {
            Since::Events { events, revision } => assert!(events.is_empty() && revision == 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bounded_log_turns_old_revisions_into_snapshots() {
        let mut s = State::new("{}".into());
        for i in 1..=5u8 {
            s.put(&format!("10.5.{i}.0-24"), &attrs("192.0.2.1"), None, 3);
        }
        assert_eq!(s.log.len(), 3);
        assert_eq!(s.compacted, 2);
        assert!(matches!(s.since(1, None).unwrap(), Since::Snapshot { .. }));
        match s.since(2, Some("10.5.5.0-24")).unwrap() {
            Since::Events { events, .. } => {
                assert_eq!(keys(&events), ["+10.5.3.0-24", "+10.5.4.0-24"])
            }
            other => panic!("{other:?}"),
        }
        s.compact();
        match s.since(4, Some("10.5.1.0-24")).unwrap() {
            Since::Snapshot { leases, revision } => {
                assert_eq!(revision, 5);
                assert_eq!(leases.len(), 4);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.since(5, None).unwrap(), Since::Events { .. }));
    }

    #[test]
    fn expiry_removes_due_leases_only_and_logs_them() {
        let mut s = State::new("{}".into());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        s.put(
            "10.5.1.0-24",
            &attrs("192.0.2.1"),
            Some(t0 + Duration::from_secs(10)),
            10,
        );
        s.put(
            "10.5.2.0-24",
            &attrs("192.0.2.2"),
            Some(t0 + Duration::from_secs(20)),
            10,
        );
        s.put("10.5.3.0-24", &attrs("192.0.2.3"), None, 10);
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(10)));
        s.expire(t0 + Duration::from_secs(15), 10);
        assert_eq!(s.leases.len(), 2);
        assert_eq!(s.revision, 4);
        assert!(s.touch("10.5.2.0-24", t0 + Duration::from_secs(60)));
        assert_eq!(s.revision, 4, "a renewal is not a change");
        s.expire(t0 + Duration::from_secs(30), 10);
        assert_eq!(s.leases.len(), 2);
        s.expire(t0 + Duration::from_secs(1_000_000), 10);
        assert_eq!(
            s.leases.keys().collect::<Vec<_>>(),
            ["10.5.3.0-24"],
            "reservations never expire"
        );
    }

    #[test]
    fn holder_matches_either_family() {
        let mut s = State::new("{}".into());
        s.put("10.5.1.0-24&fd00::-64", &attrs("192.0.2.1"), None, 10);
        assert!(s
            .holder(Some("10.5.1.0/24".parse().unwrap()), None)
            .is_some());
        assert!(s.holder(None, Some("fd00::/64".parse().unwrap())).is_some());
        assert!(s
            .holder(Some("10.5.2.0/24".parse().unwrap()), None)
            .is_none());
    }

    #[test]
    fn file_json_round_trips_and_uses_flannel_attrs() {
        let mut s = State::new(r#"{"Network":"10.5.0.0/16"}"#.into());
        s.put(
            "10.5.1.0-24",
            &attrs("192.0.2.1"),
            Some(UNIX_EPOCH + Duration::from_millis(1234)),
            10,
        );
        s.dirty = false;
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""attrs":{"PublicIP":"192.0.2.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:00:00:00:01"}}"#), "{text}");
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let mut bad = back;
        bad.format = 9;
        assert!(bad.check_format().is_err());
    }
}
