//! Property-based fuzzing of everything that parses untrusted input: the
//! network config on stdin, CNI_ARGS and subnet.env. This is the fuzzer
//! that runs in CI (the cargo-fuzz targets in `fuzz/` need nightly).
//! No root needed.

use std::collections::HashMap;

use cni_plugin::commands::run;
use cni_plugin::config;
use cni_plugin::env::parse_cni_args;
use lease_store::subnet_env::SubnetEnv;
use proptest::prelude::*;
use serde_json::{json, Value};

const CODES: [u64; 11] = [1, 2, 3, 4, 5, 6, 7, 11, 100, 101, 103];

/// JSON values of any type, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("1.0.0"),
            Just("0.3.1"),
            Just("1.1.0"),
            Just("10.244.7.9/24"),
            Just("cni0"),
            Just("0.0.0.0/0"),
            Just("999.1.1.1")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: [&str; 18] = [
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "bridge",
    "subnetFile",
    "dataDir",
    "mtu",
    "hairpinMode",
    "isDefaultGateway",
    "ipMasq",
    "runtimeConfig",
    "args",
    "prevResult",
    "capabilities",
    "cni.dev/attachments",
    "cni.dev/valid-attachments",
    "ips",
];

/// Config-shaped objects: known keys with values of any type.
fn config_like() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS.to_vec()), any_json()), 0..10).prop_map(
        |pairs| {
            let mut o = serde_json::Map::new();
            o.insert("cniVersion".into(), json!("1.0.0"));
            o.insert("name".into(), json!("n"));
            for (k, v) in pairs {
                o.insert(k.to_string(), v);
            }
            Value::Object(o)
        },
    )
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn subnet_env_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "FLANNEL_NETWORK",
        "FLANNEL_SUBNET",
        "FLANNEL_MTU",
        "FLANNEL_IPMASQ",
        "FLANNEL_IPV6_NETWORK",
        "FLANNEL_IPV6_SUBNET",
        "export FLANNEL_SUBNET",
        "#",
        "",
    ]);
    let value = prop_oneof![
        "[ -~]{0,24}",
        (any::<[u8; 4]>(), 0u8..40)
            .prop_map(|(o, p)| format!("{}.{}.{}.{}/{p}", o[0], o[1], o[2], o[3])),
        Just("10.244.0.0/16".to_string()),
        Just("10.244.7.1/24".to_string()),
        (0u32..70000).prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("\"10.244.7.1/24\"".to_string()),
    ];
    (key, value).prop_map(|(k, v)| format!("{k}={v}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn config_parse_never_panics_on_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = config::parse(&data);
        let _ = config::requested_version(&data);
    }

    #[test]
    fn config_like_objects_parse_or_fail_cleanly(v in config_like()) {
        let bytes = v.to_string();
        match config::parse(bytes.as_bytes()) {
            Ok(c) => {
                prop_assert!(cni_plugin::env::valid_ifname(&c.bridge));
                prop_assert!(!c.name.is_empty() && !c.name.contains('/'));
                if let Some(m) = c.mtu { prop_assert!((68..=65535).contains(&m)); }
                let _ = c.requested_ip(None);
            }
            Err(e) => {
                let e = cni_plugin::error::CniError::from(e);
                prop_assert!([1, 2, 6, 7].contains(&e.code), "code {}", e.code);
            }
        }
    }

    // The binary's entry point on hostile stdin, with commands that cannot
    // touch the system (VERSION; ADD/DEL/CHECK without their env vars).
    #[test]
    fn run_answers_json_for_any_stdin(v in config_like(), raw in prop::collection::vec(any::<u8>(), 0..64), use_raw in any::<bool>(),
                                      cmd in prop::sample::select(vec!["VERSION", "ADD", "DEL", "CHECK", "BOGUS", ""])) {
        let stdin = if use_raw { raw } else { v.to_string().into_bytes() };
        let out = run(&stdin, &env_of(&[("CNI_COMMAND", cmd)]));
        let j: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
        if cmd == "VERSION" {
            prop_assert!(out.success);
            prop_assert_eq!(j["supportedVersions"].as_array().map(|a| a.len()), Some(5));
        } else {
            prop_assert!(!out.success);
            let code = j["code"].as_u64().unwrap_or(0);
            prop_assert!(CODES.contains(&code), "code {}", code);
            prop_assert!(j["msg"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn cni_args_never_panic(s in "[ -~]{0,64}") {
        let _ = parse_cni_args(&s);
    }

    #[test]
    fn subnet_env_parse_never_panics_and_round_trips(lines in prop::collection::vec(subnet_env_line(), 0..8)) {
        let text = lines.join("\n");
        if let Ok(env) = SubnetEnv::parse(&text) {
            let again = SubnetEnv::parse(&env.render());
            prop_assert_eq!(again, Ok(env.clone()));
            if let Some(s) = env.subnet {
                let _ = cni_plugin::ipam::Pool::new(s);
            }
        }
    }
}
