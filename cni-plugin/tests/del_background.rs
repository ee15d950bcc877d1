//! Kernel tests of DEL's background deletion: the names are free when DEL
//! returns, the pair is gone soon after, the runtime is not kept waiting
//! for it, and a re-ADD of the same attachment works at once.
//! Need root; they fail (never skip) without it.

mod common;

use std::ffi::CString;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{pod_ip, Netns, Node, PLUGIN};
use serde_json::{json, Value};

/// How long the kernel may take to remove a pair in the background (it
/// takes 15-30 ms; a loaded shared VM can stretch that a lot).
const GONE_WITHIN: Duration = Duration::from_secs(5);

/// The host-side veth's name from an ADD result.
fn host_veth(result: &Value) -> String {
    result["interfaces"][1]["name"]
        .as_str()
        .expect("result names the host veth")
        .to_string()
}

fn tombstones(ns: &Netns) -> Vec<String> {
    ns.links()
        .lines()
        .filter(|l| l.contains(": fdel"))
        .map(str::to_string)
        .collect()
}

#[test]
fn del_frees_both_names_at_once_and_the_pair_goes_soon() {
    let node = Node::new("bgd");
    let conf = node.conf("1.0.0", json!({}));
    let p = Netns::new("bgd-p");
    let result = node.add("bgd-1", &p, &conf);
    let host = host_veth(&result);
    assert!(node.ns.has_link(&host), "{}", node.ns.links());

    node.del("bgd-1", p.path_str(), &conf);
    // The names are free immediately, whatever the kernel still does.
    assert!(!p.has_link("eth0"), "{}", p.links());
    assert!(!node.ns.has_link(&host), "{}", node.ns.links());
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);

    // And the tombstones do not stay.
    assert!(
        testkit::wait::until(GONE_WITHIN, || tombstones(&node.ns).is_empty()
            && tombstones(&p).is_empty()),
        "tombstones left after {GONE_WITHIN:?}: node {:?} pod {:?}",
        tombstones(&node.ns),
        tombstones(&p)
    );
    // Only lo is left in the pod, only lo and the bridge on the node.
    assert_eq!(p.links().lines().count(), 1, "{}", p.links());
    assert_eq!(node.ns.links().lines().count(), 2, "{}", node.ns.links());
}

#[test]
fn del_then_immediate_add_of_the_same_attachment_works() {
    let node = Node::new("bgr");
    let conf = node.conf("1.0.0", json!({}));
    let p = Netns::new("bgr-p");
    node.add("bgr-1", &p, &conf);
    for round in 0..3 {
        // No pause: the previous pair may still be on its way out.
        node.del("bgr-1", p.path_str(), &conf);
        let result = node
            .cni("ADD", "bgr-1", p.path_str(), "eth0", &conf)
            .ok()
            .json();
        let ip = pod_ip(&result);
        let (ok, addrs) = p.try_run(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            ok && addrs.contains(&format!("{ip}/24")),
            "round {round}: {addrs}"
        );
        let (_, routes) = p.try_run(&["ip", "-4", "route"]);
        assert!(
            routes.contains("default via 10.244.7.1 dev eth0"),
            "round {round}: {routes}"
        );
        let (ok, out) = p.try_run(&["ping", "-c", "1", "-W", "2", "10.244.7.1"]);
        assert!(ok, "round {round}: {out}");
    }
    node.del("bgr-1", p.path_str(), &conf);
    assert!(
        testkit::wait::until(GONE_WITHIN, || tombstones(&node.ns).is_empty()
            && tombstones(&p).is_empty()),
        "node {:?} pod {:?}",
        tombstones(&node.ns),
        tombstones(&p)
    );
    assert_eq!(node.ipam_files(), ["last_reserved_ip.0", "lock"]);
}

/// The index of `name` in `ns` (`ip -o link` starts with "<index>: ").
fn link_index(ns: &Netns, name: &str) -> u32 {
    let (ok, out) = ns.try_run(&["ip", "-o", "link", "show", "dev", name]);
    assert!(ok, "{out}");
    out.split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .unwrap_or_else(|| panic!("no index in {out:?}"))
}

#[test]
fn del_with_another_pods_netns_leaves_that_pod_alone() {
    let node = Node::new("bgw");
    let conf = node.conf("1.0.0", json!({}));
    let a = Netns::new("bgw-a");
    let b = Netns::new("bgw-b");
    node.add("bgw-a", &a, &conf);
    let b_ip = pod_ip(&node.add("bgw-b", &b, &conf));
    // The case that matters: both eth0 carry the same index, so an index
    // alone cannot tell them apart.
    assert_eq!(link_index(&a, "eth0"), link_index(&b, "eth0"));

    // A stale CNI_NETNS (e.g. a recycled /proc/<pid>/ns/net) naming b.
    node.del("bgw-a", b.path_str(), &conf);
    let (_, link) = b.try_run(&["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(",UP"), "b's eth0 was touched: {link}");
    let (ok, out) = b.try_run(&["ping", "-c", "1", "-W", "2", "10.244.7.1"]);
    assert!(ok, "{out}");
    // a's pair still goes (through its host end), and only a's address.
    assert!(
        testkit::wait::until(GONE_WITHIN, || !a.has_link("eth0")
            && tombstones(&a).is_empty()),
        "{}",
        a.links()
    );
    assert_eq!(
        node.ipam_files(),
        [b_ip.as_str(), "last_reserved_ip.0", "lock"]
    );
    node.del("bgw-b", b.path_str(), &conf);
}

/// One DEL as a runtime runs it (stdout and stderr piped, read to EOF),
/// from a thread inside the node namespace, so the host veth can be
/// watched by index without starting a process. Returns (time to EOF on
/// both pipes, whether the pair still existed at EOF, time until it was
/// gone), all from the DEL's start.
fn timed_del(
    node: &Node,
    id: &str,
    pod: &Netns,
    host: &str,
    conf: &Value,
) -> (Duration, bool, Duration) {
    let stdin = conf.to_string();
    testkit::in_netns(&node.ns, || {
        let name = CString::new(host).expect("veth name");
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "{host} not found before DEL");
        let exists = || {
            let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
            // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname needs.
            !unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null()
        };

        let start = Instant::now();
        let mut child = Command::new(PLUGIN)
            .env_clear()
            .env("CNI_COMMAND", "DEL")
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", pod.path_str())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("FLANNEL_RS_TEST_DETACHED_DELAY_MS", "300")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        if let Some(mut si) = child.stdin.take() {
            si.write_all(stdin.as_bytes()).expect("write config");
        }
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut so) = child.stdout.take() {
            so.read_to_string(&mut out).expect("read stdout");
        }
        if let Some(mut se) = child.stderr.take() {
            se.read_to_string(&mut err).expect("read stderr");
        }
        let eof = start.elapsed();
        let alive_at_eof = exists();
        let status = child.wait().expect("wait plugin");
        assert!(status.success(), "DEL failed: {out} / {err}");
        assert!(
            testkit::wait::until(GONE_WITHIN, || !exists()),
            "{host} (#{index}) still there {GONE_WITHIN:?} after DEL"
        );
        (eof, alive_at_eof, start.elapsed())
    })
    .unwrap_or_else(|e| panic!("DEL thread in the node namespace: {e}"))
}

#[test]
fn runtime_sees_eof_before_the_kernel_is_done() {
    let node = Node::new("bge");
    let conf = node.conf("1.0.0", json!({}));
    // If the background child kept stdout or stderr open, EOF could only
    // come after it exited, that is after the pair is gone: never with the
    // pair still there. The child is told to wait 300 ms before deleting
    // (on a quiet machine the kernel's deletion would otherwise beat the
    // check); a few attempts still cover a badly loaded machine.
    let mut seen = Vec::new();
    for attempt in 0..5 {
        let p = Netns::new(&format!("bge-{attempt}"));
        let id = format!("bge-{attempt}");
        let host = host_veth(&node.add(&id, &p, &conf));
        let (eof, alive_at_eof, gone) = timed_del(&node, &id, &p, &host, &conf);
        eprintln!("attempt {attempt}: EOF after {eof:?}, pair alive at EOF: {alive_at_eof}, gone after {gone:?}");
        seen.push((eof, alive_at_eof, gone));
        if alive_at_eof {
            assert!(eof < gone);
            return;
        }
    }
    panic!("the runtime's EOF came only after the pair was deleted in all attempts: {seen:?}");
}
