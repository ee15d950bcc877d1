//! `flannelctl compare` and `flannelctl probe` as a user runs them: the
//! probe on loopback (no root), bad flags and a wrong server give errors
//! naming the problem, and `compare` end-to-end on real labs (root: fails
//! loudly otherwise) with short durations.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn flannelctl() -> &'static str {
    env!("CARGO_BIN_EXE_flannelctl")
}

fn run(args: &[&str]) -> Output {
    Command::new(flannelctl())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("flannelctl runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `probe server` on a free loopback port; killed when dropped.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(flannelctl())
            .args(["probe", "server", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("probe server starts");
        let mut line = String::new();
        if let Some(err) = child.stderr.take() {
            BufReader::new(err)
                .read_line(&mut line)
                .expect("server prints its address");
        }
        // "flannelctl probe server: listening on 127.0.0.1:PORT (TCP and UDP)"
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {v}"))
}

#[test]
fn probe_pair_on_loopback() {
    let server = Server::start();
    let out = run(&[
        "probe",
        "client",
        "--server",
        &server.addr,
        "--duration",
        "300ms",
        "--streams",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
    assert_eq!(r["schema"], "flannelctl-probe/1");
    for test in ["udp_rr", "tcp_rr"] {
        let p50 = num(&r, &format!("/{test}/latency/p50_us"));
        let p99 = num(&r, &format!("/{test}/latency/p99_us"));
        let max = num(&r, &format!("/{test}/latency/max_us"));
        assert!(p50 > 0.0 && p99 >= p50 && max >= p99, "{test}: {r}");
        assert!(
            num(&r, &format!("/{test}/latency/count")) > 10.0,
            "{test}: {r}"
        );
    }
    assert_eq!(num(&r, "/udp_rr/lost"), 0.0, "loopback loses nothing");
    assert_eq!(num(&r, "/tcp_n/streams"), 2.0);
    for t in ["tcp_1", "tcp_n"] {
        assert!(num(&r, &format!("/{t}/gbit_per_s")) > 0.0, "{r}");
        assert!(num(&r, &format!("/{t}/bytes")) > 0.0, "{r}");
    }
    // The table for people, from the same run shape.
    let out = run(&[
        "probe",
        "client",
        "--server",
        &server.addr,
        "--duration",
        "200ms",
        "--label",
        "lo",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().filter(|l| l.starts_with("lo ")).count() == 2,
        "one latency and one throughput row: {table}"
    );
}

#[test]
fn bad_flags_name_the_flag() {
    for (args, want) in [
        (
            vec!["compare", "--datapaths", "host-gw,vxlam"],
            "unknown datapath \"vxlam\"",
        ),
        (
            vec!["compare", "--duration", "0s"],
            "--duration must be more than 0",
        ),
        (
            vec!["compare", "--streams", "0"],
            "--streams must be more than 0",
        ),
        (
            vec!["compare", "--rounds", "0"],
            "--rounds must be more than 0",
        ),
        (
            vec!["probe", "client", "--server", "10.0.0.1"],
            "--server \"10.0.0.1\": no port",
        ),
        (
            vec![
                "probe",
                "client",
                "--server",
                "127.0.0.1:1",
                "--duration",
                "soon",
            ],
            "--duration \"soon\" is not a duration",
        ),
        (
            vec!["probe", "client", "--server", "127.0.0.1:1", "--size", "4"],
            "--size 4 is too small",
        ),
        (
            vec!["probe", "server", "--listen", "7100"],
            "--listen \"7100\"",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_server_that_is_not_a_probe_is_named() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n");
        }
    });
    let out = run(&["probe", "client", "--server", &addr, "--duration", "1s"]);
    let _ = t.join();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("did not answer like a flannelctl probe server") && err.contains("SSH-2.0"),
        "{err}"
    );
    // Nothing listening: the connect error names the server and the fix.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = run(&[
        "probe",
        "client",
        "--server",
        &free.to_string(),
        "--connect-timeout",
        "300ms",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to the probe server") && err.contains(&free.to_string()),
        "{err}"
    );
}

// ---- compare on real labs (root) ----

/// Builds the daemon and the CNI plugin next to this flannelctl (the lab
/// looks for them there), in the same target directory and profile; with
/// FCT_LAB_BIN_DIR set, uses the binaries there instead (returned as the
/// `--bin-dir` to pass).
fn build_lab_binaries() -> Option<String> {
    if let Ok(dir) = std::env::var("FCT_LAB_BIN_DIR") {
        for bin in ["flanneld-rs", "flannel-rs"] {
            assert!(
                Path::new(&dir).join(bin).is_file(),
                "FCT_LAB_BIN_DIR={dir} has no {bin}"
            );
        }
        return Some(dir);
    }
    let exe = Path::new(flannelctl());
    let profile_dir = exe.parent().expect("flannelctl is in a directory");
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "flanneld-rs",
        "-p",
        "cni-plugin",
        "--bins",
        "--target-dir",
    ])
    .arg(target_dir)
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the lab binaries: {}",
        stderr(&out)
    );
    None
}

/// Removes the test's labs even when the test fails halfway.
struct Labs(Vec<String>);

impl Drop for Labs {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = run(&["lab", "down", "--name", name]);
        }
    }
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn compare_end_to_end_on_the_lab() {
    testkit::assert_root("compare_end_to_end_on_the_lab (builds labs in network namespaces)");
    let bin_dir = build_lab_binaries();
    let prefix = format!("t{}", std::process::id() % 1_000_000);
    let _labs = Labs(
        ["hgw", "vx", "gn"]
            .iter()
            .map(|t| format!("{prefix}{t}"))
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let json: PathBuf = dir.path().join("compare.json");
    let svg: PathBuf = dir.path().join("compare.svg");
    let mut args = vec![
        "compare",
        "--datapaths",
        "host-gw,vxlan,geneve",
        "--duration",
        "1s",
        "--rounds",
        "2",
        "--lab-prefix",
        &prefix,
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    if let Some(d) = &bin_dir {
        args.extend(["--bin-dir", d]);
    }
    let out = run(&args);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{table}", stderr(&out));

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["schema"], "flannelctl-compare/1");
    assert!(num(&r, "/machine/cpus") >= 1.0);
    let dps = r["datapaths"].as_array().unwrap();
    let names: Vec<&str> = dps.iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["host-gw", "vxlan", "geneve"]);
    for d in &dps[..2] {
        assert_eq!(d["status"], "ok", "{d}");
        assert_eq!(
            d["rounds"].as_array().map(Vec::len),
            Some(2),
            "{}",
            d["name"]
        );
        let a = &d["aggregate"];
        for lat in ["udp_rr", "tcp_rr"] {
            let p50 = num(a, &format!("/{lat}/p50_us"));
            let p99 = num(a, &format!("/{lat}/p99_us"));
            assert!(p50 > 0.0 && p99 >= p50, "{}: {a}", d["name"]);
        }
        assert!(
            num(a, "/tcp_1_gbit_per_s") > 0.0 && num(a, "/tcp_n_gbit_per_s") > 0.0,
            "{a}"
        );
        assert!(d["pod_mtu"].as_u64().is_some(), "{d}");
    }
    // VXLAN costs 50 bytes of the 9001-byte underlay; host-gw none.
    assert_eq!(dps[0]["pod_mtu"], 9001);
    assert_eq!(dps[1]["pod_mtu"], 8951);
    assert!(num(&dps[1], "/ratios/udp_p50") > 0.0, "{}", dps[1]);
    // Kernel Geneve: this kernel has no module; the row says why, whatever
    // the daemon reported.
    let g = &dps[2];
    if g["status"] != "ok" {
        assert_eq!(g["status"], "unavailable", "{g}");
        let why = g["reason"].as_str().unwrap_or_default();
        assert!(!why.is_empty(), "{g}");
        let row = format!("unavailable: {why}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("geneve") && l.contains(&row)),
            "{table}"
        );
    }
    assert!(table.contains("(x host-gw)"), "{table}");

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    let lines: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .filter_map(|n| n.attribute("data-datapath"))
        .collect();
    assert_eq!(lines, ["host-gw", "vxlan", "host-gw", "vxlan"]);

    // compare removed its labs itself.
    let left = namespaces_with(&format!("fct-lab-{prefix}"));
    assert!(left.is_empty(), "left behind: {left:?}");
}
