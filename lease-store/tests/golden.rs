//! Golden tests against flannel's documented formats (samples and their
//! origins in tests/golden/README.md), in both directions: flannel's JSON
//! parsed by us, and ours re-emitted byte for byte where flannel's output is
//! known.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use lease_store::{LeaseAttrs, NetworkConfig};
use serde_json::{json, Value};

fn golden(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn attrs(name: &str) -> LeaseAttrs {
    LeaseAttrs::from_json(&golden(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn config(name: &str) -> NetworkConfig {
    NetworkConfig::parse(&golden(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn flannel_documented_lease_round_trips_byte_for_byte() {
    let text = golden("lease-vxlan.json");
    let a = attrs("lease-vxlan.json");
    assert_eq!(a.public_ip, Ipv4Addr::new(192, 168, 64, 3));
    assert_eq!(a.public_ipv6, None);
    assert_eq!(a.backend_type, "vxlan");
    assert_eq!(
        a.backend_data,
        Some(json!({"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}))
    );
    assert_eq!(a.backend_v6_data, None);
    assert_eq!(a.to_json(), text);
}

#[test]
fn struct_tag_samples_are_emitted_exactly() {
    for name in [
        "lease-dual-stack.json",
        "lease-host-gw.json",
        "lease-empty.json",
    ] {
        let text = golden(name);
        assert_eq!(attrs(name).to_json(), text, "{name}");
    }
    let d = attrs("lease-dual-stack.json");
    assert_eq!(d.public_ipv6, Some("2001:db8::10".parse().unwrap()));
    assert_eq!(
        d.backend_v6_data,
        Some(json!({"VNI": 1, "VtepMAC": "ae:12:0b:7c:11:02"}))
    );
    let h = attrs("lease-host-gw.json");
    assert_eq!((h.backend_data, h.backend_v6_data), (None, None));
}

#[test]
fn keys_in_any_case_and_unknown_keys_parse_like_go() {
    let a = attrs("lease-mixed-case.json");
    assert_eq!(a, attrs("lease-vxlan.json"));
    assert_eq!(a.to_json(), golden("lease-vxlan.json"));
}

/// Our output read by Go's rules: exact field names of the Go struct, in
/// struct order, with the JSON types Go's fields decode from (`ip.IP4` and
/// `*ip.IP6` from strings or null, `json.RawMessage` from any value).
#[test]
fn our_output_has_gos_field_names_types_and_order() {
    let a = LeaseAttrs {
        public_ip: Ipv4Addr::new(198, 51, 100, 7),
        public_ipv6: Some("2001:db8::7".parse().unwrap()),
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VtepMAC": "0a:58:00:00:00:07", "VNI": 1})),
        backend_v6_data: Some(json!({"VNI": 1, "VtepMAC": "0a:58:00:00:01:07"})),
    };
    let text = a.to_json();
    let fields = [
        "\"PublicIP\":",
        "\"PublicIPv6\":",
        "\"BackendType\":",
        "\"BackendData\":",
        "\"BackendV6Data\":",
    ];
    let positions: Vec<usize> = fields
        .iter()
        .map(|f| {
            text.find(f)
                .unwrap_or_else(|| panic!("{f} missing in {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order differs from Go's struct: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["PublicIP"], "198.51.100.7");
    assert_eq!(v["PublicIPv6"], "2001:db8::7");
    assert!(v["BackendData"].is_object());
    assert!(
        !text.contains(' ') && !text.contains('\n'),
        "Go writes compact JSON: {text}"
    );
    // Backend data keys come out in Go's order for vxlan (VNI, VtepMAC).
    assert!(
        text.contains(r#""BackendData":{"VNI":1,"VtepMAC":"0a:58:00:00:00:07"}"#),
        "{text}"
    );
    assert_eq!(LeaseAttrs::from_json(&text).unwrap(), a);
}

#[test]
fn lease_errors_name_the_field() {
    for (text, field) in [
        (r#"{"PublicIP":"300.1.1.1"}"#, "PublicIP"),
        (r#"{"PublicIP":5}"#, "PublicIP"),
        (
            r#"{"PublicIP":"192.0.2.1","PublicIPv6":"nope"}"#,
            "PublicIPv6",
        ),
        (r#"{"PublicIP":"192.0.2.1","BackendType":3}"#, "BackendType"),
    ] {
        let e = LeaseAttrs::from_json(text).unwrap_err().to_string();
        assert!(e.contains(field), "{text}: {e}");
    }
    assert!(LeaseAttrs::from_json("[]").is_err());
}

#[test]
fn configuration_md_example() {
    let c = config("net-conf-configuration-md.json");
    assert_eq!(c.network, Some("10.0.0.0/8".parse().unwrap()));
    assert_eq!(c.subnet_len, 20);
    assert_eq!(c.subnet_min, Some("10.10.0.0/20".parse().unwrap()));
    assert_eq!(c.subnet_max, Some("10.99.0.0/20".parse().unwrap()));
    assert_eq!(c.backend_type, "udp");
    assert_eq!(c.backend["Port"], 7890);
}

#[test]
fn kube_flannel_manifest_config() {
    let c = config("net-conf-kube-flannel.json");
    assert_eq!(c.network, Some("10.244.0.0/16".parse().unwrap()));
    assert_eq!(c.subnet_len, 24);
    assert_eq!(c.subnet_min, Some("10.244.1.0/24".parse().unwrap()));
    assert_eq!(c.subnet_max, Some("10.244.255.0/24".parse().unwrap()));
    assert!(!c.enable_nftables && c.enable_ipv4 && !c.enable_ipv6);
    assert_eq!(c.backend_type, "vxlan");
}

#[test]
fn dual_stack_config_from_the_docs() {
    let c = config("net-conf-dual-stack.json");
    assert!(c.enable_ipv4 && c.enable_ipv6);
    assert_eq!(c.ipv6_network, Some("2001:cafe:42::/56".parse().unwrap()));
    assert_eq!(c.ipv6_subnet_len, 64);
    assert_eq!(
        c.ipv6_subnet_min,
        Some("2001:cafe:42:1::/64".parse().unwrap())
    );
    assert_eq!(
        c.ipv6_subnet_max,
        Some("2001:cafe:42:ff::/64".parse().unwrap())
    );
    assert_eq!(c.subnet_min, Some("10.42.1.0/24".parse().unwrap()));
}

#[test]
fn backend_object_is_kept_verbatim_for_the_backend() {
    let c = config("net-conf-vxlan-options.json");
    assert_eq!(
        c.backend,
        json!({"Type": "vxlan", "VNI": 4096, "Port": 4789, "DirectRouting": true})
    );
    let c = config("net-conf-no-backend.json");
    assert_eq!(
        c.backend_type, "vxlan",
        "no Backend means vxlan (documented choice; Go's code says udp)"
    );
}
