//! Pure translation between etcd's keys/values and leases: key paths under the
//! prefix, lease decoding, and watch events to `LeaseEvent`s. No I/O here, so
//! all of it is unit-tested without an etcd.

use std::time::{Duration, SystemTime};

use crate::key;
use crate::lease::{Lease, LeaseAttrs};
use crate::store::{LeaseEvent, StoreError};

/// Go flannel's default key prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";

/// The key layout under one prefix (`<prefix>/config`, `<prefix>/subnets/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// A trailing slash on the prefix is dropped so that `/a/` and `/a` name
    /// the same keys (flannel joins with `path.Join`, which does the same).
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        Self {
            prefix: trimmed.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// The range prefix of all leases (with the trailing slash, so that a
    /// sibling such as `<prefix>/subnetsX` is not matched).
    pub fn subnets(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// The full key of a lease key such as `10.5.52.0-24`.
    pub fn subnet(&self, lease_key: &str) -> String {
        format!("{}/subnets/{}", self.prefix, lease_key)
    }

    /// The lease key part of a full etcd key, if it lies under the subnets
    /// prefix.
    pub fn lease_key<'a>(&self, full: &'a [u8]) -> Option<&'a str> {
        let full = std::str::from_utf8(full).ok()?;
        let rest = full.strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix("/subnets/")?;
        (!rest.is_empty()).then_some(rest)
    }
}

/// The end of a range request covering every key that starts with `prefix`
/// (etcd's "prefix + 1" rule).
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: etcd reads "\0" as "to the end of the keyspace".
    vec![0]
}

/// The key just after `key` in etcd's byte order: where the next page of a
/// paginated range starts.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Decodes one stored lease. `expiration` is `None` for a key without an etcd
/// lease (a reservation).
pub fn decode_lease(
    full_key: &str,
    lease_key: &str,
    value: &[u8],
    mod_revision: i64,
    expiration: Option<SystemTime>,
) -> Result<Lease, StoreError> {
    let (subnet, ipv6_subnet) = key::decode(lease_key).map_err(|e| StoreError::Decode {
        key: full_key.to_string(),
        reason: e.to_string(),
    })?;
    let attrs: LeaseAttrs = serde_json::from_slice(value).map_err(|e| StoreError::Decode {
        key: full_key.to_string(),
        reason: format!("lease value is not flannel's LeaseAttrs JSON: {e}"),
    })?;
    Ok(Lease {
        subnet,
        ipv6_subnet,
        attrs,
        expiration,
        revision: mod_revision,
    })
}

/// Encodes a lease's value exactly as Go flannel writes it.
pub fn encode_attrs(attrs: &LeaseAttrs) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(attrs).map_err(|e| StoreError::Decode {
        key: "(lease attributes)".to_string(),
        reason: format!("cannot encode as JSON: {e}"),
    })
}

/// The expiration of an etcd lease that has `ttl_secs` left at `now`; `None`
/// when etcd says the lease is gone (TTL -1) or none was attached.
pub fn expiration_from_ttl(now: SystemTime, ttl_secs: i64) -> Option<SystemTime> {
    u64::try_from(ttl_secs)
        .ok()
        .map(|s| now + Duration::from_secs(s))
}

/// One watch event, reduced to the fields we use (so that the translation is
/// testable without etcd-client's types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent<'a> {
    pub deleted: bool,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub mod_revision: i64,
    /// The etcd lease ID attached to the key (0: none).
    pub lease_id: i64,
    /// The value before this event (`prev_kv`), with its lease ID.
    pub prev: Option<(&'a [u8], i64)>,
}

/// What one watch event means for the consumer.
#[derive(Debug)]
pub enum Translated {
    /// Not a lease key, or a change to the caller's own lease.
    Skip,
    /// A lease event. For `Added`, `needs_expiry` asks the caller to look up
    /// the etcd lease's TTL (its ID is given) and fill in the expiration.
    Event {
        event: LeaseEvent,
        needs_expiry: Option<i64>,
    },
    /// A deletion whose previous value is unknown (compacted): the consumer
    /// cannot tell what to tear down, so the whole table must be re-read.
    Resync,
    /// A value that does not decode: logged and skipped, as one bad key must
    /// not stop a node from seeing all the others.
    Bad(StoreError),
}

/// Translates a watch event. `own_key` is the caller's own lease key
/// (`Lease::key()`), whose changes are not delivered.
pub fn translate(
    keys: &Keys,
    ev: &RawEvent<'_>,
    own_key: Option<&str>,
    now: SystemTime,
) -> Translated {
    let Some(lease_key) = keys.lease_key(ev.key) else {
        return Translated::Skip;
    };
    if own_key == Some(lease_key) {
        return Translated::Skip;
    }
    let full = String::from_utf8_lossy(ev.key);
    if ev.deleted {
        let Some((prev_value, prev_lease)) = ev.prev else {
            return Translated::Resync;
        };
        // The etcd lease is gone or going: a removed lease expires now.
        let expiration = (prev_lease != 0).then_some(now);
        match decode_lease(&full, lease_key, prev_value, ev.mod_revision, expiration) {
            Ok(lease) => Translated::Event {
                event: LeaseEvent::Removed(lease),
                needs_expiry: None,
            },
            Err(e) => Translated::Bad(e),
        }
    } else {
        match decode_lease(&full, lease_key, ev.value, ev.mod_revision, None) {
            Ok(lease) => Translated::Event {
                event: LeaseEvent::Added(lease),
                needs_expiry: (ev.lease_id != 0).then_some(ev.lease_id),
            },
            Err(e) => Translated::Bad(e),
        }
    }
}

/// Exponential backoff with a cap, for reconnecting to etcd.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles it up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: start again from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const VALUE: &[u8] = br#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    #[test]
    fn key_layout_matches_flannel() {
        let k = Keys::new(DEFAULT_PREFIX);
        assert_eq!(k.config(), "/coreos.com/network/config");
        assert_eq!(
            k.subnet("10.5.52.0-24"),
            "/coreos.com/network/subnets/10.5.52.0-24"
        );
        assert_eq!(Keys::new("/x/net/").config(), "/x/net/config");
        assert_eq!(
            k.lease_key(b"/coreos.com/network/subnets/10.5.52.0-24"),
            Some("10.5.52.0-24")
        );
        assert_eq!(k.lease_key(b"/coreos.com/network/config"), None);
        assert_eq!(k.lease_key(b"/coreos.com/network/subnets/"), None);
        assert_eq!(
            k.lease_key(b"/coreos.com/networkX/subnets/10.5.52.0-24"),
            None
        );
    }

    #[test]
    fn range_ends() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_range_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_range_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(key_after(b"/a/1"), b"/a/1\0".to_vec());
    }

    #[test]
    fn decodes_flannel_value_and_round_trips() {
        let l = decode_lease("k", "10.5.52.0-24", VALUE, 7, None).unwrap();
        assert_eq!(l.subnet.unwrap().to_string(), "10.5.52.0/24");
        assert_eq!(l.attrs.public_ip, Ipv4Addr::new(192, 168, 64, 3));
        assert_eq!(l.attrs.backend_type, "vxlan");
        assert_eq!(l.revision, 7);
        assert!(l.is_reservation());
        let again: serde_json::Value =
            serde_json::from_slice(&encode_attrs(&l.attrs).unwrap()).unwrap();
        let orig: serde_json::Value = serde_json::from_slice(VALUE).unwrap();
        assert_eq!(again, orig);
    }

    #[test]
    fn decode_errors_name_the_key() {
        let e = decode_lease("/p/subnets/x", "x", VALUE, 1, None).unwrap_err();
        assert!(e.to_string().contains("/p/subnets/x"), "{e}");
        let e = decode_lease("/p/subnets/10.0.0.0-24", "10.0.0.0-24", b"{", 1, None).unwrap_err();
        assert!(e.to_string().contains("LeaseAttrs"), "{e}");
    }

    fn ev<'a>(deleted: bool, key: &'a [u8], prev: Option<(&'a [u8], i64)>) -> RawEvent<'a> {
        RawEvent {
            deleted,
            key,
            value: if deleted { b"" } else { VALUE },
            mod_revision: 9,
            lease_id: if deleted { 0 } else { 42 },
            prev,
        }
    }

    #[test]
    fn translates_put_and_delete_with_old_attributes() {
        let k = Keys::new(DEFAULT_PREFIX);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let key = b"/coreos.com/network/subnets/10.5.52.0-24";
        match translate(&k, &ev(false, key, None), None, now) {
            Translated::Event {
                event: LeaseEvent::Added(l),
                needs_expiry: Some(42),
            } => assert_eq!(l.revision, 9),
            other => panic!("{other:?}"),
        }
        match translate(&k, &ev(true, key, Some((VALUE, 42))), None, now) {
            Translated::Event {
                event: LeaseEvent::Removed(l),
                needs_expiry: None,
            } => {
                assert_eq!(
                    l.attrs.backend_data.unwrap()["VtepMAC"],
                    "c6:d2:32:6f:8f:44"
                );
                assert_eq!(l.expiration, Some(now));
            }
            other => panic!("{other:?}"),
        }
        // A removed reservation stays a reservation.
        match translate(&k, &ev(true, key, Some((VALUE, 0))), None, now) {
            Translated::Event {
                event: LeaseEvent::Removed(l),
                ..
            } => assert!(l.is_reservation()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skips_own_lease_and_foreign_keys_and_resyncs_without_prev() {
        let k = Keys::new(DEFAULT_PREFIX);
        let now = SystemTime::UNIX_EPOCH;
        let key = b"/coreos.com/network/subnets/10.5.52.0-24";
        assert!(matches!(
            translate(&k, &ev(false, key, None), Some("10.5.52.0-24"), now),
            Translated::Skip
        ));
        assert!(matches!(
            translate(
                &k,
                &ev(false, b"/coreos.com/network/config", None),
                None,
                now
            ),
            Translated::Skip
        ));
        assert!(matches!(
            translate(&k, &ev(true, key, None), None, now),
            Translated::Resync
        ));
        assert!(matches!(
            translate(
                &k,
                &ev(false, b"/coreos.com/network/subnets/junk", None),
                None,
                now
            ),
            Translated::Bad(_)
        ));
    }

    #[test]
    fn ttl_to_expiration() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            expiration_from_ttl(now, 60),
            Some(now + Duration::from_secs(60))
        );
        assert_eq!(expiration_from_ttl(now, -1), None);
    }

    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
