//! Pure mapping between `coordination.k8s.io/v1` Lease objects and flannel
//! leases (the `lease` subnet source, see docs/KUBE-MODE.md): object names
//! from subnet keys, flannel attributes in annotations, `holderIdentity` /
//! `leaseDurationSeconds` / `renewTime` as the TTL, and the checks that turn
//! a hand-edited or conflicting object into a skipped one. No I/O, so all of
//! it is unit-tested without an API server.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use k8s_openapi::api::coordination::v1::{Lease as KLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};

use super::mapping::{BACKEND_DATA, BACKEND_TYPE, BACKEND_V6_DATA, PUBLIC_IP, PUBLIC_IPV6};
use crate::lease::{Lease, LeaseAttrs};

/// Every Lease object of ours starts with this, so that an operator sees at
/// once what they are among the namespace's other Leases.
pub const NAME_PREFIX: &str = "flannel-";
/// The label (after the annotation prefix) that marks our Lease objects;
/// lists and watches select on it, so other Leases in the namespace (leader
/// elections) cost nothing.
pub const LEASE_LABEL: &str = "subnet-lease";
/// The label (after the prefix) with the lease's public address (see
/// [`address_label`]).
pub const ADDRESS_LABEL: &str = "subnet-lease-address";
/// The annotations (after the prefix) holding the subnets.
pub const SUBNET: &str = "subnet";
pub const IPV6_SUBNET: &str = "ipv6-subnet";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LeaseObjectError {
    #[error("Lease {name}: annotation {annotation} = {value:?} is not {what}; delete the Lease (its node acquires again) or fix the annotation")]
    BadAnnotation {
        name: String,
        annotation: String,
        value: String,
        what: &'static str,
    },
    #[error("Lease {name} has neither {prefix}{SUBNET} nor {prefix}{IPV6_SUBNET}: it is not a subnet lease; delete it")]
    NoSubnet { name: String, prefix: String },
    #[error("Lease {name} holds subnet {key}, whose Lease must be named {expected}: delete the Lease (its node acquires again)")]
    NameMismatch {
        name: String,
        key: String,
        expected: String,
    },
    #[error("Lease {name}: leaseDurationSeconds {value} is not a positive number of seconds; delete the Lease")]
    BadDuration { name: String, value: i32 },
    #[error("Lease {name} has leaseDurationSeconds but no renewTime: delete the Lease (its node acquires again)")]
    NoRenewTime { name: String },
    #[error("Lease {name} has no spec.holderIdentity: delete the Lease (its node acquires again)")]
    NoHolder { name: String },
    #[error(
        "Lease {name} and Lease {kept} both claim node {holder}; {name} is ignored: delete it"
    )]
    DuplicateHolder {
        name: String,
        kept: String,
        holder: String,
    },
}

impl LeaseObjectError {
    /// The object the error is about.
    pub fn name(&self) -> &str {
        match self {
            LeaseObjectError::BadAnnotation { name, .. }
            | LeaseObjectError::NoSubnet { name, .. }
            | LeaseObjectError::NameMismatch { name, .. }
            | LeaseObjectError::BadDuration { name, .. }
            | LeaseObjectError::NoRenewTime { name }
            | LeaseObjectError::NoHolder { name }
            | LeaseObjectError::DuplicateHolder { name, .. } => name,
        }
    }
}

/// The Lease object name of a subnet key. Kubernetes names are DNS
/// subdomains (lowercase alphanumerics, `-`, `.`), so the key's `:` (IPv6)
/// becomes `x` and its `&` (dual-stack) becomes `--`; neither appears in a
/// key otherwise, so the mapping is reversible ([`key_of_name`]).
pub fn object_name(subnet: Option<Ipv4Net>, ipv6_subnet: Option<Ipv6Net>) -> String {
    let key = crate::key::encode(subnet, ipv6_subnet);
    format!("{NAME_PREFIX}{}", key.replace(':', "x").replace('&', "--"))
}

/// The subnets a Lease object's name stands for, when it is one of our
/// names: used to keep a subnet whose object is unreadable from being
/// handed out again.
pub fn key_of_name(name: &str) -> Option<(Option<Ipv4Net>, Option<Ipv6Net>)> {
    let key = name
        .strip_prefix(NAME_PREFIX)?
        .replace("--", "&")
        .replace('x', ":");
    let (v4, v6) = crate::key::decode(&key).ok()?;
    (object_name(v4, v6) == name).then_some((v4, v6))
}

/// The label selector of our objects.
pub fn label_selector(prefix: &str) -> String {
    format!("{prefix}{LEASE_LABEL}=true")
}

/// A node's address as text: its public IPv4, else its public IPv6 with
/// `:` as `-` (the holder of a reservation, and of leases written without
/// a node name).
pub fn address_of(attrs: &LeaseAttrs) -> String {
    if attrs.public_ip.is_unspecified() {
        attrs
            .public_ipv6
            .map(|ip| ip.to_string().replace(':', "-"))
            .unwrap_or_default()
    } else {
        attrs.public_ip.to_string()
    }
}

/// A lease's address as a label value, so that a node finds its own Leases
/// (flannel's rule: same public IP) with a label selector instead of
/// listing the whole table. A label value is at most 63 characters of
/// `[A-Za-z0-9._-]`, alphanumeric at both ends; text that is not one is
/// hashed (64-bit FNV-1a, `h-<hex>`). Only a hint: the annotations are
/// what counts, so a collision costs a wasted read, never a wrong owner.
pub fn address_label(attrs: &LeaseAttrs) -> String {
    label_value(&address_of(attrs))
}

fn label_value(text: &str) -> String {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = text.len() <= 63
        && alnum(text.chars().next())
        && alnum(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        return text.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("h-{h:016x}")
}

/// The selector of our Leases labelled with `attrs`' address.
pub fn address_selector(prefix: &str, attrs: &LeaseAttrs) -> String {
    format!(
        "{},{prefix}{ADDRESS_LABEL}={}",
        label_selector(prefix),
        address_label(attrs)
    )
}

/// True when the object carries our label (others are not ours to judge).
pub fn is_ours(obj: &KLease, prefix: &str) -> bool {
    obj.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(&format!("{prefix}{LEASE_LABEL}")))
        .is_some_and(|v| v == "true")
}

/// A decoded Lease object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub name: String,
    pub lease: Lease,
    /// `spec.holderIdentity` (the node name; for a store without a node, the
    /// public IP); "" when unset.
    pub holder: String,
    /// `spec.renewTime`, for choosing between two Leases of one node.
    pub renewed: Option<SystemTime>,
}

impl Decoded {
    /// Live: a reservation, or renewed within its duration at `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.lease.expiration.is_none_or(|e| e > now)
    }
}

fn micro_to_system(t: &MicroTime) -> SystemTime {
    let nanos = t.0.as_nanosecond();
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn system_to_micro(t: SystemTime) -> MicroTime {
    let micros = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    // A clock before 1970 or past year 9999 is not worth an error here.
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or_default())
}

/// The object's resourceVersion as a number (0 when opaque).
pub fn resource_version(obj: &KLease) -> i64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

pub fn name_of(obj: &KLease) -> &str {
    obj.metadata.name.as_deref().unwrap_or("")
}

/// Reads one of our Lease objects. Every field a hand edit can break is
/// checked, so that a bad object is skipped as a whole rather than turned
/// into a wrong route.
pub fn decode(obj: &KLease, prefix: &str) -> Result<Decoded, LeaseObjectError> {
    let name = name_of(obj).to_string();
    let empty = BTreeMap::new();
    let ann = obj.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |n: &str| ann.get(&format!("{prefix}{n}")).filter(|v| !v.is_empty());
    let bad = |n: &str, v: &str, what| LeaseObjectError::BadAnnotation {
        name: name.clone(),
        annotation: format!("{prefix}{n}"),
        value: v.to_string(),
        what,
    };
    let subnet = match get(SUBNET) {
        None => None,
        Some(v) => Some(
            v.parse::<Ipv4Net>()
                .ok()
                .filter(|n| n.network() == n.addr())
                .ok_or_else(|| bad(SUBNET, v, "an IPv4 subnet (network address/length)"))?,
        ),
    };
    let ipv6_subnet = match get(IPV6_SUBNET) {
        None => None,
        Some(v) => Some(
            v.parse::<Ipv6Net>()
                .ok()
                .filter(|n| n.network() == n.addr())
                .ok_or_else(|| bad(IPV6_SUBNET, v, "an IPv6 subnet (network address/length)"))?,
        ),
    };
    if subnet.is_none() && ipv6_subnet.is_none() {
        return Err(LeaseObjectError::NoSubnet {
            name,
            prefix: prefix.to_string(),
        });
    }
    let expected = object_name(subnet, ipv6_subnet);
    if expected != name {
        return Err(LeaseObjectError::NameMismatch {
            name,
            key: crate::key::encode(subnet, ipv6_subnet),
            expected,
        });
    }
    let public_ip = match get(PUBLIC_IP) {
        None => Ipv4Addr::UNSPECIFIED,
        Some(v) => v
            .parse()
            .map_err(|_| bad(PUBLIC_IP, v, "an IPv4 address"))?,
    };
    let public_ipv6 = match get(PUBLIC_IPV6) {
        None => None,
        Some(v) => Some(
            v.parse::<Ipv6Addr>()
                .map_err(|_| bad(PUBLIC_IPV6, v, "an IPv6 address"))?,
        ),
    };
    if public_ip.is_unspecified() && public_ipv6.is_none() {
        return Err(bad(
            PUBLIC_IP,
            "",
            "an IPv4 address (no public address at all)",
        ));
    }
    let json = |n: &str| -> Result<Option<serde_json::Value>, LeaseObjectError> {
        match get(n) {
            None => Ok(None),
            Some(v) => serde_json::from_str(v)
                .map(Some)
                .map_err(|_| bad(n, v, "JSON")),
        }
    };
    let attrs = LeaseAttrs {
        public_ip,
        public_ipv6,
        backend_type: get(BACKEND_TYPE).cloned().unwrap_or_default(),
        backend_data: json(BACKEND_DATA)?,
        backend_v6_data: json(BACKEND_V6_DATA)?,
    };
    let spec = obj.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref().unwrap_or("").is_empty() {
        return Err(LeaseObjectError::NoHolder { name });
    }
    let renewed = spec.renew_time.as_ref().map(micro_to_system);
    let expiration = match spec.lease_duration_seconds {
        // No duration: an operator's reservation, which never expires.
        None => None,
        Some(d) if d <= 0 => return Err(LeaseObjectError::BadDuration { name, value: d }),
        Some(d) => {
            let Some(r) = renewed else {
                return Err(LeaseObjectError::NoRenewTime { name });
            };
            Some(r + Duration::from_secs(u64::from(d.unsigned_abs())))
        }
    };
    Ok(Decoded {
        lease: Lease {
            subnet,
            ipv6_subnet,
            attrs,
            expiration,
            revision: resource_version(obj),
        },
        holder: spec.holder_identity.unwrap_or_default(),
        renewed,
        name,
    })
}

/// Among live, decoded leases, the ones to use: when two non-reservation
/// Leases name the same holder, the one renewed last is kept (the running
/// daemon renews it) and the other is rejected. Reservations are never
/// rejected for this: they belong to the operator.
pub fn dedupe_holders(live: Vec<Decoded>) -> (Vec<Decoded>, Vec<LeaseObjectError>) {
    let mut best: HashMap<String, usize> = HashMap::new();
    for (i, d) in live.iter().enumerate() {
        if d.lease.is_reservation() || d.holder.is_empty() {
            continue;
        }
        match best.get(&d.holder) {
            Some(&j) if (live[j].renewed, &live[j].name) >= (d.renewed, &d.name) => {}
            _ => {
                best.insert(d.holder.clone(), i);
            }
        }
    }
    let mut kept = Vec::with_capacity(live.len());
    let mut rejected = Vec::new();
    for (i, d) in live.iter().enumerate() {
        let winner = if d.lease.is_reservation() || d.holder.is_empty() {
            None
        } else {
            best.get(&d.holder).copied().filter(|&j| j != i)
        };
        match winner {
            None => kept.push(d.clone()),
            Some(j) => rejected.push(LeaseObjectError::DuplicateHolder {
                name: d.name.clone(),
                kept: live[j].name.clone(),
                holder: d.holder.clone(),
            }),
        }
    }
    (kept, rejected)
}

/// What to write for a lease.
#[derive(Debug, Clone)]
pub struct Write<'a> {
    pub namespace: &'a str,
    pub prefix: &'a str,
    pub holder: &'a str,
    /// The Node that owns the lease (its name and uid): Kubernetes' garbage
    /// collector deletes the Lease when that Node goes. `None` for a
    /// reservation (it belongs to the operator) and for stores without a
    /// node.
    pub owner: Option<(&'a str, &'a str)>,
    /// `None` writes a reservation (no `leaseDurationSeconds`).
    pub ttl: Option<Duration>,
    pub now: SystemTime,
    /// `spec.acquireTime` to keep (a renewal); `None` sets it to `now`.
    pub acquired: Option<MicroTime>,
    /// The resourceVersion the write is conditional on (an update); `None`
    /// for a create.
    pub resource_version: Option<String>,
}

/// The object for a lease.
pub fn encode(lease: &Lease, w: &Write<'_>) -> KLease {
    let p = w.prefix;
    let mut ann = BTreeMap::new();
    if let Some(sn) = lease.subnet {
        ann.insert(format!("{p}{SUBNET}"), sn.to_string());
    }
    if let Some(sn) = lease.ipv6_subnet {
        ann.insert(format!("{p}{IPV6_SUBNET}"), sn.to_string());
    }
    let a = &lease.attrs;
    if !a.public_ip.is_unspecified() {
        ann.insert(format!("{p}{PUBLIC_IP}"), a.public_ip.to_string());
    }
    if let Some(ip) = a.public_ipv6 {
        ann.insert(format!("{p}{PUBLIC_IPV6}"), ip.to_string());
    }
    if !a.backend_type.is_empty() {
        ann.insert(format!("{p}{BACKEND_TYPE}"), a.backend_type.clone());
    }
    if let Some(d) = &a.backend_data {
        ann.insert(format!("{p}{BACKEND_DATA}"), d.to_string());
    }
    if let Some(d) = &a.backend_v6_data {
        ann.insert(format!("{p}{BACKEND_V6_DATA}"), d.to_string());
    }
    let now = system_to_micro(w.now);
    KLease {
        metadata: ObjectMeta {
            name: Some(object_name(lease.subnet, lease.ipv6_subnet)),
            namespace: Some(w.namespace.to_string()),
            labels: Some(BTreeMap::from([
                (format!("{p}{LEASE_LABEL}"), "true".to_string()),
                (format!("{p}{ADDRESS_LABEL}"), address_label(&lease.attrs)),
            ])),
            annotations: Some(ann),
            owner_references: w.owner.map(|(name, uid)| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: uid.into(),
                    ..Default::default()
                }]
            }),
            resource_version: w.resource_version.clone(),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(w.holder.to_string()),
            lease_duration_seconds: w
                .ttl
                .map(|t| i32::try_from(t.as_secs().max(1)).unwrap_or(i32::MAX)),
            acquire_time: Some(w.acquired.clone().unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            ..Default::default()
        }),
    }
}

/// The subnet(s) an object blocks although it cannot be read: its name's,
/// when the name is one of ours. A placeholder lease (no attributes that
/// match any node) stands for it in allocation.
pub fn placeholder(name: &str) -> Option<Lease> {
    let (subnet, ipv6_subnet) = key_of_name(name)?;
    Some(Lease {
        subnet,
        ipv6_subnet,
        attrs: LeaseAttrs {
            public_ip: Ipv4Addr::UNSPECIFIED,
            public_ipv6: None,
            backend_type: String::new(),
            backend_data: None,
            backend_v6_data: None,
        },
        expiration: None,
        revision: 0,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_labels_are_valid_label_values() {
        assert_eq!(label_value("192.0.2.9"), "192.0.2.9");
        assert_eq!(label_value("2001-db8--9"), "2001-db8--9");
        let long = "n".repeat(64);
        let hashed = label_value(&long);
        assert!(hashed.starts_with("h-") && hashed.len() == 18, "{hashed}");
        assert_eq!(hashed, label_value(&long), "stable");
        assert_ne!(hashed, label_value(&"n".repeat(65)));
        // Not alphanumeric at an end, or a character labels refuse.
        assert!(label_value("-1").starts_with("h-"));
        assert!(label_value("").starts_with("h-"));
        assert!(label_value("a:b").starts_with("h-"));
        let mut a = node_attrs(9);
        a.public_ip = Ipv4Addr::UNSPECIFIED;
        a.public_ipv6 = Some("2001:db8::9".parse().unwrap());
        assert_eq!(address_label(&a), "2001-db8--9");
    }

    use super::*;

    fn node_attrs(n: u8) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 0, 2, n),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "0a:58:00:00:00:01"})),
            backend_v6_data: None,
        }
    }

    const P: &str = super::super::mapping::DEFAULT_PREFIX;

    fn net4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn lease(sn: &str, n: u8) -> Lease {
        Lease {
            subnet: Some(net4(sn)),
            ipv6_subnet: None,
            attrs: node_attrs(n),
            expiration: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100)),
            revision: 0,
        }
    }

    fn write(ttl: Option<Duration>) -> Write<'static> {
        Write {
            namespace: "kube-flannel",
            prefix: P,
            holder: "node-a",
            owner: Some(("node-a", "uid-1")),
            ttl,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            acquired: None,
            resource_version: None,
        }
    }

    #[test]
    fn names_are_dns_subdomains_and_reversible() {
        let v4 = Some(net4("10.244.3.0/24"));
        let v6: Option<Ipv6Net> = Some("fd00:10:244:3::/64".parse().unwrap());
        assert_eq!(object_name(v4, None), "flannel-10.244.3.0-24");
        assert_eq!(
            object_name(v4, v6),
            "flannel-10.244.3.0-24--fd00x10x244x3xx-64"
        );
        assert_eq!(object_name(None, v6), "flannel-fd00x10x244x3xx-64");
        for (a, b) in [(v4, None), (v4, v6), (None, v6)] {
            let name = object_name(a, b);
            assert!(name.len() <= 253);
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
            assert_eq!(key_of_name(&name), Some((a, b)));
        }
        assert_eq!(key_of_name("kube-controller-manager"), None);
        assert_eq!(key_of_name("flannel-garbage"), None);
    }

    #[test]
    fn a_lease_round_trips_through_its_object() {
        let l = lease("10.244.3.0/24", 1);
        let obj = encode(&l, &write(Some(Duration::from_secs(100))));
        assert!(is_ours(&obj, P));
        let owners = obj.metadata.owner_references.clone().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("Node", "uid-1")
        );
        let d = decode(&obj, P).unwrap();
        assert_eq!(d.lease, l);
        assert_eq!(d.holder, "node-a");
        assert!(d.is_live(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_099)));
        assert!(!d.is_live(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100)));
        // A reservation has no duration and never expires.
        let r = Lease {
            expiration: None,
            ..l.clone()
        };
        let mut w = write(None);
        w.owner = None;
        let obj = encode(&r, &w);
        assert!(obj.metadata.owner_references.is_none());
        let d = decode(&obj, P).unwrap();
        assert!(d.lease.is_reservation());
        assert!(d.is_live(SystemTime::now()));
    }

    fn edited(f: impl FnOnce(&mut KLease)) -> Result<Decoded, LeaseObjectError> {
        let mut obj = encode(
            &lease("10.244.3.0/24", 1),
            &write(Some(Duration::from_secs(100))),
        );
        f(&mut obj);
        decode(&obj, P)
    }

    fn set(obj: &mut KLease, name: &str, v: &str) {
        obj.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(format!("{P}{name}"), v.to_string());
    }

    #[test]
    fn hand_edited_objects_are_refused_with_what_is_wrong() {
        let e = edited(|o| set(o, SUBNET, "10.244.3.7/24")).unwrap_err();
        assert!(e.to_string().contains("subnet"), "{e}");
        let e = edited(|o| set(o, SUBNET, "10.244.4.0/24")).unwrap_err();
        assert!(matches!(e, LeaseObjectError::NameMismatch { .. }), "{e}");
        assert!(e.to_string().contains("flannel-10.244.4.0-24"), "{e}");
        let e = edited(|o| set(o, PUBLIC_IP, "not-an-ip")).unwrap_err();
        assert!(e.to_string().contains("not-an-ip"), "{e}");
        let e = edited(|o| set(o, BACKEND_DATA, "{broken")).unwrap_err();
        assert!(e.to_string().contains("JSON"), "{e}");
        let e = edited(|o| {
            o.metadata.annotations = None;
        })
        .unwrap_err();
        assert!(matches!(e, LeaseObjectError::NoSubnet { .. }), "{e}");
        let e = edited(|o| o.spec.as_mut().unwrap().lease_duration_seconds = Some(-5)).unwrap_err();
        assert!(
            matches!(e, LeaseObjectError::BadDuration { value: -5, .. }),
            "{e}"
        );
        let e = edited(|o| o.spec.as_mut().unwrap().renew_time = None).unwrap_err();
        assert!(matches!(e, LeaseObjectError::NoRenewTime { .. }), "{e}");
        // A wiped spec must not read as a reservation that never expires.
        let e = edited(|o| o.spec = None).unwrap_err();
        assert!(matches!(e, LeaseObjectError::NoHolder { .. }), "{e}");
    }

    #[test]
    fn two_leases_of_one_node_keep_the_one_renewed_last() {
        let mk = |sn: &str, holder: &str, renewed: u64, reservation: bool| Decoded {
            name: object_name(Some(net4(sn)), None),
            lease: Lease {
                expiration: (!reservation).then_some(SystemTime::now()),
                ..lease(sn, 1)
            },
            holder: holder.into(),
            renewed: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(renewed)),
        };
        let (kept, rejected) = dedupe_holders(vec![
            mk("10.244.1.0/24", "a", 10, false),
            mk("10.244.2.0/24", "a", 20, false),
            mk("10.244.3.0/24", "b", 5, false),
            mk("10.244.4.0/24", "a", 30, true),
        ]);
        let names: Vec<&str> = kept.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "flannel-10.244.2.0-24",
                "flannel-10.244.3.0-24",
                "flannel-10.244.4.0-24"
            ]
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].name(), "flannel-10.244.1.0-24");
        assert!(rejected[0].to_string().contains("flannel-10.244.2.0-24"));
    }

    #[test]
    fn placeholders_block_the_subnet_of_an_unreadable_object() {
        let p = placeholder("flannel-10.244.9.0-24").unwrap();
        assert_eq!(p.subnet, Some(net4("10.244.9.0/24")));
        assert!(placeholder("something-else").is_none());
    }
}
