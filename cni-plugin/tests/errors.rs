//! Kernel tests: bad input gets the right CNI error and leaves nothing
//! behind; STATUS; the version matrix. Need root; they fail without it.

mod common;

use common::{Netns, Node, PLUGIN};
use serde_json::json;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn version_matrix() {
    let node = Node::new("ver");
    for (i, v) in VERSIONS.iter().enumerate() {
        let p = Netns::new(&format!("ver-{i}"));
        let conf = node.conf(v, json!({}));
        let r = node.add(&format!("ver-{i}"), &p, &conf);
        assert_eq!(r["cniVersion"], *v);
        let ip = &r["ips"][0];
        assert_eq!(ip.get("version").is_some(), v.starts_with('0'), "{v}: {r}");
        if ip.get("version").is_some() {
            assert_eq!(ip["version"], "4");
        }
        assert_eq!(
            r["interfaces"][2].get("mtu").is_some(),
            *v == "1.1.0",
            "{v}: {r}"
        );
        assert_eq!(r["interfaces"][2]["sandbox"], p.path_str());
        node.del(&format!("ver-{i}"), p.path_str(), &conf);

        let out = node
            .run_plugin(
                PLUGIN,
                &[("CNI_COMMAND", "VERSION")],
                json!({"cniVersion": v}).to_string().as_bytes(),
            )
            .ok()
            .json();
        assert_eq!(out["cniVersion"], *v);
        assert_eq!(out["supportedVersions"], json!(VERSIONS));
    }
    // cniVersions alone: the newest we share is used.
    let p = Netns::new("ver-list");
    let mut conf = node.conf(
        "1.0.0",
        json!({"cniVersions": ["0.4.0", "1.1.0", "7.0.0"], "hairpinMode": false}),
    );
    conf.as_object_mut().unwrap().remove("cniVersion");
    let r = node.add("ver-list", &p, &conf);
    assert_eq!(r["cniVersion"], "1.1.0");
    let host = r["interfaces"][1]["name"].as_str().expect("host veth name");
    let (_, detail) = node.ns.try_run(&["ip", "-d", "link", "show", host]);
    assert!(detail.contains("hairpin off"), "{detail}");
    node.del("ver-list", p.path_str(), &conf);

    let p = Netns::new("ver-bad");
    let r = node.cni(
        "ADD",
        "ver-bad",
        p.path_str(),
        "eth0",
        &node.conf("0.2.0", json!({})),
    );
    assert_eq!(r.code(), 1);
    assert_eq!(r.json()["cniVersion"], "0.2.0");
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_nothing() {
    let node = Node::new("bad");
    let conf = node.conf("1.0.0", json!({}));
    let p = Netns::new("bad-p");
    let path = p.path_str();
    let run = |env: &[(&str, &str)], stdin: &[u8]| node.run_plugin(PLUGIN, env, stdin);
    let add_env = |netns: &str| -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), "bad-1".into()),
            ("CNI_NETNS".into(), netns.into()),
            ("CNI_IFNAME".into(), "eth0".into()),
        ]
    };
    let call = |env: Vec<(String, String)>, stdin: &[u8]| {
        let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&e, stdin)
    };
    let conf_bytes = conf.to_string();

    // Malformed JSON: decode failure; no stdout logs besides the error JSON.
    let r = call(add_env(path), b"{\"cniVersion\": ");
    assert_eq!(r.code(), 6);
    // Missing and invalid env vars name the variable.
    let r = run(
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x")],
        conf_bytes.as_bytes(),
    );
    assert_eq!(r.code(), 4);
    assert!(r.stdout.contains("CNI_IFNAME"), "{}", r.stdout);
    let r = run(&[], conf_bytes.as_bytes());
    assert_eq!(r.code(), 4);
    assert!(r.stdout.contains("CNI_COMMAND"), "{}", r.stdout);
    let r = run(&[("CNI_COMMAND", "FROB")], conf_bytes.as_bytes());
    assert_eq!(r.code(), 4);
    let mut e = add_env(path);
    e[3].1 = "eth0/../x".into();
    assert_eq!(call(e, conf_bytes.as_bytes()).code(), 4);
    let mut e = add_env(path);
    e.push(("CNI_ARGS".into(), "garbage".into()));
    assert_eq!(call(e, conf_bytes.as_bytes()).code(), 4);
    // Bridge name too long.
    let long = node.conf("1.0.0", json!({"bridge": "bridge-name-too-long"}));
    assert_eq!(call(add_env(path), long.to_string().as_bytes()).code(), 7);
    // Netns path missing: container unknown.
    let r = call(
        add_env("/var/run/netns/fct-cni-does-not-exist"),
        conf_bytes.as_bytes(),
    );
    assert_eq!(r.code(), 3);
    // An undecodable prevResult is refused before anything is made.
    let bad_prev = node.conf("1.0.0", json!({"prevResult": {"ips": [{"address": "x"}]}}));
    assert_eq!(
        call(add_env(path), bad_prev.to_string().as_bytes()).code(),
        6
    );
    // A path that is not a network namespace.
    assert_eq!(
        call(add_env("/etc/hostname"), conf_bytes.as_bytes()).code(),
        4
    );
    // subnet.env with an invalid CIDR, then missing.
    node.write_subnet_env(&common::SUBNET_ENV.replace("10.244.7.1/24", "10.244.777.1/24"));
    let r = call(add_env(path), conf_bytes.as_bytes());
    assert_eq!(r.code(), 6);
    assert!(r.stdout.contains("FLANNEL_SUBNET"), "{}", r.stdout);
    std::fs::remove_file(&node.subnet_env).expect("remove subnet.env");
    assert_eq!(call(add_env(path), conf_bytes.as_bytes()).code(), 11);
    node.write_subnet_env(common::SUBNET_ENV);
    // Interface already present in the pod: refused, and neither a veth
    // nor a reservation is left behind.
    let (ok, out) = p.try_run(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    assert!(ok, "{out}");
    let r = call(add_env(path), conf_bytes.as_bytes());
    assert_eq!(r.code(), 105, "{}", r.stdout);
    assert!(r.stdout.contains("already exists"), "{}", r.stdout);
    assert!(!node.ns.links().contains("veth"), "{}", node.ns.links());
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
    assert!(r.stderr.is_empty() || !r.stdout.contains('\n'));
}

#[test]
fn status_tracks_subnet_env() {
    let node = Node::new("st");
    let conf = node.conf("1.1.0", json!({})).to_string();
    let r = node.run_plugin(
        PLUGIN,
        &[
            ("CNI_COMMAND", "STATUS"),
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", ""),
        ],
        conf.as_bytes(),
    );
    assert!(r.success, "{}", r.stdout);
    assert!(r.stdout.is_empty());
    std::fs::remove_file(&node.subnet_env).expect("remove subnet.env");
    let r = node.run_plugin(PLUGIN, &[("CNI_COMMAND", "STATUS")], conf.as_bytes());
    assert_eq!(r.code(), 50);
    node.write_subnet_env("FLANNEL_NETWORK=nonsense\n");
    let r = node.run_plugin(PLUGIN, &[("CNI_COMMAND", "STATUS")], conf.as_bytes());
    assert_eq!(r.code(), 50);
}

#[test]
fn failure_after_the_veth_exists_is_rolled_back() {
    let node = Node::new("rb");
    let conf = node.conf("1.0.0", json!({}));
    let p = Netns::new("rb-p");
    // The pod already has a default route (through another interface), so
    // our default route is refused after the pair and address exist.
    for args in [
        &[
            "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1",
        ][..],
        &["ip", "addr", "add", "198.51.100.2/24", "dev", "x0"],
        &["ip", "link", "set", "x0", "up"],
        &["ip", "link", "set", "x1", "up"],
        &["ip", "route", "add", "default", "via", "198.51.100.1"],
    ] {
        let (ok, out) = p.try_run(args);
        assert!(ok, "{args:?}: {out}");
    }
    let r = node.cni("ADD", "rb-1", p.path_str(), "eth0", &conf);
    assert_eq!(r.code(), 100, "{}", r.stdout);
    assert!(r.stdout.contains("0.0.0.0/0"), "{}", r.stdout);
    assert!(!p.has_link("eth0"), "{}", p.links());
    assert!(!node.ns.links().contains("veth"), "{}", node.ns.links());
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
    // Without the conflicting default route the same attachment works.
    let plain = node.conf("1.0.0", json!({"isDefaultGateway": false}));
    node.add("rb-1", &p, &plain);
    node.del("rb-1", p.path_str(), &plain);
}
