//! Pure mapping between Kubernetes Node objects and leases: Node → Lease,
//! our attributes → the status patch bodies, and node changes → watch
//! events. No I/O, so all of it is unit-tested without an API server.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use crate::lease::{Lease, LeaseAttrs};
use crate::store::LeaseEvent;

/// flannel's annotation prefix (`--kube-annotation-prefix` changes it).
pub const DEFAULT_PREFIX: &str = "flannel.alpha.coreos.com/";

/// The annotation names, without the prefix (flannel's names).
pub const SUBNET_MANAGER: &str = "kube-subnet-manager";
pub const BACKEND_TYPE: &str = "backend-type";
pub const BACKEND_DATA: &str = "backend-data";
pub const BACKEND_V6_DATA: &str = "backend-v6-data";
pub const PUBLIC_IP: &str = "public-ip";
pub const PUBLIC_IPV6: &str = "public-ipv6";
pub const PUBLIC_IP_OVERWRITE: &str = "public-ip-overwrite";
pub const PUBLIC_IPV6_OVERWRITE: &str = "public-ipv6-overwrite";
pub const NODE_PUBLIC_IP: &str = "node-public-ip";
pub const NODE_PUBLIC_IPV6: &str = "node-public-ipv6";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("node {node}: podCIDR {value:?} is not a CIDR; fix the node's spec.podCIDRs")]
    BadPodCidr { node: String, value: String },
    #[error(
        "node {node}: annotation {name} = {value:?} is not {what}; fix or remove the annotation"
    )]
    BadAnnotation {
        node: String,
        name: String,
        value: String,
        what: &'static str,
    },
}

/// The node's name ("" when the object has none, which the API never sends).
pub fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or("")
}

/// The node's resourceVersion as a number: the API server's are etcd
/// revisions; an opaque one (another storage) counts as 0.
pub fn resource_version(node: &Node) -> i64 {
    node.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn annotations(node: &Node) -> Option<&BTreeMap<String, String>> {
    node.metadata.annotations.as_ref()
}

fn annotation<'a>(node: &'a Node, prefix: &str, name: &str) -> Option<&'a str> {
    annotations(node)?
        .get(&format!("{prefix}{name}"))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// True when flannel (in Kubernetes mode) manages this node: only such nodes
/// are peers.
pub fn is_managed(node: &Node, prefix: &str) -> bool {
    annotation(node, prefix, SUBNET_MANAGER) == Some("true")
}

/// The node's pod CIDRs (`spec.podCIDRs`, else the older `spec.podCIDR`),
/// split by family. Host bits are dropped, as the stores keep network
/// addresses.
pub fn pod_cidrs(node: &Node) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), MapError> {
    let spec = node.spec.as_ref();
    let mut list: Vec<&str> = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        if let Some(one) = spec.and_then(|s| s.pod_cidr.as_deref()) {
            list.push(one);
        }
    }
    let (mut v4, mut v6) = (None, None);
    for value in list.into_iter().filter(|v| !v.is_empty()) {
        let net: IpNet = value.parse().map_err(|_| MapError::BadPodCidr {
            node: node_name(node).to_string(),
            value: value.to_string(),
        })?;
        match net.trunc() {
            IpNet::V4(n) if v4.is_none() => v4 = Some(n),
            IpNet::V6(n) if v6.is_none() => v6 = Some(n),
            // A second CIDR of one family: the controller manager never
            // assigns one; the first is the node's.
            _ => {}
        }
    }
    Ok((v4, v6))
}

fn parse_ip<T: std::str::FromStr>(
    node: &Node,
    prefix: &str,
    name: &str,
    what: &'static str,
) -> Result<Option<T>, MapError> {
    match annotation(node, prefix, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| MapError::BadAnnotation {
            node: node_name(node).to_string(),
            name: format!("{prefix}{name}"),
            value: v.to_string(),
            what,
        }),
    }
}

fn parse_json(node: &Node, prefix: &str, name: &str) -> Result<Option<Value>, MapError> {
    match annotation(node, prefix, name) {
        None => Ok(None),
        Some(v) => match serde_json::from_str::<Value>(v) {
            Ok(Value::Null) => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(_) => Err(MapError::BadAnnotation {
                node: node_name(node).to_string(),
                name: format!("{prefix}{name}"),
                value: v.to_string(),
                what: "JSON",
            }),
        },
    }
}

/// The public IPs an operator pinned on the node: `public-ip-overwrite`
/// wins over `node-public-ip` (flannel's order). Used both for our own node
/// at acquire and for peers.
pub fn pinned_public_ips(
    node: &Node,
    prefix: &str,
) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), MapError> {
    let v4 = match parse_ip(node, prefix, PUBLIC_IP_OVERWRITE, "an IPv4 address")? {
        Some(ip) => Some(ip),
        None => parse_ip(node, prefix, NODE_PUBLIC_IP, "an IPv4 address")?,
    };
    let v6 = match parse_ip(node, prefix, PUBLIC_IPV6_OVERWRITE, "an IPv6 address")? {
        Some(ip) => Some(ip),
        None => parse_ip(node, prefix, NODE_PUBLIC_IPV6, "an IPv6 address")?,
    };
    Ok((v4, v6))
}

/// The lease a managed node publishes; `None` for a node flannel does not
/// manage or that has no pod CIDR yet.
pub fn node_lease(node: &Node, prefix: &str) -> Result<Option<Lease>, MapError> {
    if !is_managed(node, prefix) {
        return Ok(None);
    }
    let (subnet, ipv6_subnet) = pod_cidrs(node)?;
    if subnet.is_none() && ipv6_subnet.is_none() {
        return Ok(None);
    }
    let (pinned_v4, pinned_v6) = pinned_public_ips(node, prefix)?;
    let public_ip = match pinned_v4 {
        Some(ip) => ip,
        None => {
            parse_ip(node, prefix, PUBLIC_IP, "an IPv4 address")?.unwrap_or(Ipv4Addr::UNSPECIFIED)
        }
    };
    let public_ipv6 = match pinned_v6 {
        Some(ip) => Some(ip),
        None => parse_ip(node, prefix, PUBLIC_IPV6, "an IPv6 address")?,
    };
    let attrs = LeaseAttrs {
        public_ip,
        public_ipv6,
        backend_type: annotation(node, prefix, BACKEND_TYPE)
            .unwrap_or_default()
            .to_string(),
        backend_data: parse_json(node, prefix, BACKEND_DATA)?,
        backend_v6_data: parse_json(node, prefix, BACKEND_V6_DATA)?,
    };
    Ok(Some(Lease {
        subnet,
        ipv6_subnet,
        attrs,
        // Kubernetes leases have no TTL: the node object lives as long as
        // the node is in the cluster.
        expiration: None,
        revision: resource_version(node),
    }))
}

/// The attributes our own node publishes: what the daemon detected, with
/// the operator's pinned public IPs (annotations on the node) taking
/// precedence.
pub fn own_attrs(node: &Node, prefix: &str, detected: &LeaseAttrs) -> Result<LeaseAttrs, MapError> {
    let (v4, v6) = pinned_public_ips(node, prefix)?;
    let mut attrs = detected.clone();
    if let Some(ip) = v4 {
        attrs.public_ip = ip;
    }
    if let Some(ip) = v6 {
        attrs.public_ipv6 = Some(ip);
    }
    Ok(attrs)
}

/// The JSON merge patch (`application/merge-patch+json`) on the node's
/// status subresource that publishes `attrs` as annotations. Annotations of
/// a family we do not publish are removed (`null`), so a peer never reads a
/// stale VTEP.
pub fn annotations_patch(prefix: &str, attrs: &LeaseAttrs) -> Value {
    let json_or_null = |v: &Option<Value>| match v {
        Some(v) => Value::String(v.to_string()),
        None => Value::Null,
    };
    let mut a = serde_json::Map::new();
    let mut put = |name: &str, value: Value| {
        a.insert(format!("{prefix}{name}"), value);
    };
    put(SUBNET_MANAGER, json!("true"));
    put(BACKEND_TYPE, json!(attrs.backend_type));
    put(BACKEND_DATA, json_or_null(&attrs.backend_data));
    put(BACKEND_V6_DATA, json_or_null(&attrs.backend_v6_data));
    put(
        PUBLIC_IP,
        if attrs.public_ip.is_unspecified() {
            Value::Null
        } else {
            json!(attrs.public_ip.to_string())
        },
    );
    put(
        PUBLIC_IPV6,
        attrs
            .public_ipv6
            .map_or(Value::Null, |ip| json!(ip.to_string())),
    );
    json!({ "metadata": { "annotations": a } })
}

/// The strategic merge patch on the node's status that sets
/// `NetworkUnavailable=False`. Strategic, not a JSON merge patch: a merge
/// patch replaces the whole `conditions` list (erasing the kubelet's
/// `Ready`), while a strategic one merges by the condition's `type`.
/// `now` is an RFC 3339 time.
pub fn network_available_patch(now: &str) -> Value {
    json!({
        "status": {
            "conditions": [{
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": "FlannelIsUp",
                "message": "flanneld-rs is running on this node",
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]
        }
    })
}

/// The events a change to one node means for a watcher that knew `before`
/// (the node's lease as last delivered, if any) and now sees `after`.
/// Equality covers every field, so a change to only the IPv6 annotations is
/// an update (Go flannel drops those).
pub fn node_change(before: Option<&Lease>, after: Option<&Lease>) -> Vec<LeaseEvent> {
    match (before, after) {
        (None, None) => vec![],
        (None, Some(l)) => vec![LeaseEvent::Added(l.clone())],
        (Some(p), None) => vec![LeaseEvent::Removed(p.clone())],
        (Some(p), Some(l)) => {
            let same_subnets = p.subnet == l.subnet && p.ipv6_subnet == l.ipv6_subnet;
            if same_subnets && p.attrs == l.attrs {
                vec![]
            } else if same_subnets {
                vec![LeaseEvent::Added(l.clone())]
            } else {
                // A new pod CIDR (node re-created under the same name): the
                // old subnet's routes must go before the new ones come.
                vec![LeaseEvent::Removed(p.clone()), LeaseEvent::Added(l.clone())]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const P: &str = DEFAULT_PREFIX;

    fn node(cidrs: &[&str], ann: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                resource_version: Some("42".into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (format!("{P}{k}"), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }

    const VX: &str = r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}"#;
    const VX6: &str = r#"{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}"#;

    fn managed(cidrs: &[&str], extra: &[(&str, &str)]) -> Node {
        let mut ann = vec![
            (SUBNET_MANAGER, "true"),
            (BACKEND_TYPE, "vxlan"),
            (BACKEND_DATA, VX),
            (PUBLIC_IP, "192.0.2.1"),
        ];
        ann.extend_from_slice(extra);
        node(cidrs, &ann)
    }

    #[test]
    fn dual_stack_node_maps_to_a_lease() {
        let n = managed(
            &["10.244.3.0/24", "fd00:10:244:3::/64"],
            &[(PUBLIC_IPV6, "2001:db8::1"), (BACKEND_V6_DATA, VX6)],
        );
        let l = node_lease(&n, P).unwrap().unwrap();
        assert_eq!(l.subnet, Some("10.244.3.0/24".parse().unwrap()));
        assert_eq!(l.ipv6_subnet, Some("fd00:10:244:3::/64".parse().unwrap()));
        assert_eq!(l.attrs.public_ip, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(l.attrs.public_ipv6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(l.attrs.backend_type, "vxlan");
        assert_eq!(
            l.attrs.backend_data.as_ref().unwrap()["VtepMAC"],
            "aa:bb:cc:dd:ee:01"
        );
        assert_eq!(
            l.attrs.backend_v6_data.as_ref().unwrap()["VtepMAC"],
            "aa:bb:cc:dd:ee:02"
        );
        assert_eq!(l.revision, 42);
        assert!(l.expiration.is_none());
    }

    #[test]
    fn old_single_pod_cidr_field_and_host_bits() {
        let mut n = managed(&[], &[]);
        n.spec.as_mut().unwrap().pod_cidr = Some("10.244.7.9/24".into());
        let l = node_lease(&n, P).unwrap().unwrap();
        assert_eq!(l.subnet, Some("10.244.7.0/24".parse().unwrap()));
        assert_eq!(l.ipv6_subnet, None);
    }

    #[test]
    fn unmanaged_or_cidr_less_nodes_are_not_leases() {
        let mut n = managed(&["10.244.3.0/24"], &[]);
        n.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(&format!("{P}{SUBNET_MANAGER}"));
        assert_eq!(node_lease(&n, P).unwrap(), None);
        let n = managed(&["10.244.3.0/24"], &[(SUBNET_MANAGER, "false")]);
        assert_eq!(node_lease(&n, P).unwrap(), None);
        assert_eq!(node_lease(&managed(&[], &[]), P).unwrap(), None);
        // Another prefix: our annotations are not there.
        assert_eq!(
            node_lease(&managed(&["10.244.3.0/24"], &[]), "x.io/").unwrap(),
            None
        );
    }

    #[test]
    fn overwrite_beats_node_public_ip_beats_published() {
        let n = managed(
            &["10.244.3.0/24"],
            &[
                (NODE_PUBLIC_IP, "198.51.100.7"),
                (PUBLIC_IP_OVERWRITE, "198.51.100.9"),
            ],
        );
        assert_eq!(
            node_lease(&n, P).unwrap().unwrap().attrs.public_ip,
            Ipv4Addr::new(198, 51, 100, 9)
        );
        let n = managed(&["10.244.3.0/24"], &[(NODE_PUBLIC_IP, "198.51.100.7")]);
        assert_eq!(
            node_lease(&n, P).unwrap().unwrap().attrs.public_ip,
            Ipv4Addr::new(198, 51, 100, 7)
        );
        let n = managed(
            &["10.244.3.0/24"],
            &[
                (PUBLIC_IPV6_OVERWRITE, "2001:db8::9"),
                (NODE_PUBLIC_IPV6, "2001:db8::7"),
            ],
        );
        assert_eq!(
            node_lease(&n, P).unwrap().unwrap().attrs.public_ipv6,
            Some("2001:db8::9".parse().unwrap())
        );

        let detected = node_lease(&managed(&["10.244.3.0/24"], &[]), P)
            .unwrap()
            .unwrap()
            .attrs;
        let own = own_attrs(&n, P, &detected).unwrap();
        assert_eq!(own.public_ip, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(own.public_ipv6, Some("2001:db8::9".parse().unwrap()));
        let n = managed(&["10.244.3.0/24"], &[(PUBLIC_IP_OVERWRITE, "198.51.100.9")]);
        assert_eq!(
            own_attrs(&n, P, &detected).unwrap().public_ip,
            Ipv4Addr::new(198, 51, 100, 9)
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = node_lease(&managed(&["10.244.3.0/33"], &[]), P).unwrap_err();
        assert!(matches!(e, MapError::BadPodCidr { .. }), "{e}");
        let e = node_lease(
            &managed(&["10.244.3.0/24"], &[(PUBLIC_IP_OVERWRITE, "nope")]),
            P,
        )
        .unwrap_err();
        assert!(e.to_string().contains("public-ip-overwrite"), "{e}");
        let e = node_lease(&managed(&["10.244.3.0/24"], &[(BACKEND_DATA, "{")]), P).unwrap_err();
        assert!(e.to_string().contains("backend-data"), "{e}");
    }

    #[test]
    fn annotations_patch_has_flannels_names_and_round_trips() {
        let n = managed(
            &["10.244.3.0/24", "fd00:10:244:3::/64"],
            &[(PUBLIC_IPV6, "2001:db8::1"), (BACKEND_V6_DATA, VX6)],
        );
        let attrs = node_lease(&n, P).unwrap().unwrap().attrs;
        let patch = annotations_patch("p.example/", &attrs);
        let a = &patch["metadata"]["annotations"];
        assert_eq!(a["p.example/kube-subnet-manager"], "true");
        assert_eq!(a["p.example/backend-type"], "vxlan");
        assert_eq!(a["p.example/public-ip"], "192.0.2.1");
        assert_eq!(a["p.example/public-ipv6"], "2001:db8::1");
        // Backend data is a JSON document inside a string, as flannel writes it.
        let bd: Value =
            serde_json::from_str(a["p.example/backend-data"].as_str().unwrap()).unwrap();
        assert_eq!(bd, serde_json::from_str::<Value>(VX).unwrap());

        // Applying the patch's annotations to a node gives back the attrs.
        let mut back = managed(&["10.244.3.0/24", "fd00:10:244:3::/64"], &[]);
        let map = back.metadata.annotations.as_mut().unwrap();
        map.clear();
        for (k, v) in a.as_object().unwrap() {
            if let Some(s) = v.as_str() {
                map.insert(k.clone(), s.to_string());
            }
        }
        assert_eq!(
            node_lease(&back, "p.example/").unwrap().unwrap().attrs,
            attrs
        );
    }

    #[test]
    fn v4_only_patch_clears_v6_annotations() {
        let attrs = node_lease(&managed(&["10.244.3.0/24"], &[]), P)
            .unwrap()
            .unwrap()
            .attrs;
        let patch = annotations_patch(P, &attrs);
        let a = &patch["metadata"]["annotations"];
        assert!(a[format!("{P}public-ipv6")].is_null());
        assert!(a[format!("{P}backend-v6-data")].is_null());
    }

    #[test]
    fn condition_patch_is_flannels() {
        let p = network_available_patch("2026-01-01T00:00:00Z");
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["type"], "NetworkUnavailable");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "FlannelIsUp");
        assert_eq!(c["lastTransitionTime"], "2026-01-01T00:00:00Z");
    }

    #[test]
    fn node_changes_become_events() {
        let base = node_lease(
            &managed(
                &["10.244.3.0/24", "fd00:10:244:3::/64"],
                &[(PUBLIC_IPV6, "2001:db8::1")],
            ),
            P,
        )
        .unwrap()
        .unwrap();
        assert_eq!(node_change(None, None), vec![]);
        assert_eq!(
            node_change(None, Some(&base)),
            vec![LeaseEvent::Added(base.clone())]
        );
        assert_eq!(
            node_change(Some(&base), None),
            vec![LeaseEvent::Removed(base.clone())]
        );
        // Only the resourceVersion moved (a kubelet heartbeat): nothing.
        let mut hb = base.clone();
        hb.revision += 10;
        assert_eq!(node_change(Some(&base), Some(&hb)), vec![]);
        // Only an IPv6 annotation changed: an update all the same.
        let mut v6 = base.clone();
        v6.attrs.public_ipv6 = Some("2001:db8::2".parse().unwrap());
        assert_eq!(
            node_change(Some(&base), Some(&v6)),
            vec![LeaseEvent::Added(v6.clone())]
        );
        let mut v6d = base.clone();
        v6d.attrs.backend_v6_data =
            Some(serde_json::json!({"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:03"}));
        assert_eq!(
            node_change(Some(&base), Some(&v6d)),
            vec![LeaseEvent::Added(v6d.clone())]
        );
        // A new pod CIDR: removal of the old one first.
        let mut moved = base.clone();
        moved.subnet = Some("10.244.9.0/24".parse().unwrap());
        assert_eq!(
            node_change(Some(&base), Some(&moved)),
            vec![
                LeaseEvent::Removed(base.clone()),
                LeaseEvent::Added(moved.clone())
            ]
        );
    }
}
