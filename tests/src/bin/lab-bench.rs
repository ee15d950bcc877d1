//! Daemon benchmarks on the lab (docs/PERFORMANCE.md, daemon section):
//!
//! - convergence: from a fake peer's lease committed in etcd to its route
//!   programmed in the node (seen by `ip monitor route`), 1 peer x N, and
//!   1,000 peers in one etcd transaction;
//! - the daemon's RSS and CPU with 1,000 peers;
//! - pod-to-pod RTT (ping) and TCP throughput (iperf3) across nodes, VXLAN
//!   vs host-gw, alternating A B A B, at underlay MTU 1500 and 9001;
//! - repair: from `ip link del flannel.1` (and from deleting one route, one
//!   FDB entry) on node 1 to node 2's route, neighbour and FDB entry all
//!   back, with the resync at 10 min so only kernel notifications can
//!   trigger the repair; `--reps` runs of each.
//!
//! Root. `cargo build --release -p e2e -p flanneld-rs -p cni-plugin -p flannelctl --bins && sudo
//! target/release/lab-bench [convergence|pods|ping|repair|all] [--reps 30] [--rounds 5]`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::etcd_http;
use e2e::lab::{self, Lab, LabConfig};
use e2e::stats::{median, ms, percentile};

const PREFIX: &str = "/coreos.com/network";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let result = match what {
        "convergence" => convergence(reps),
        "pods" => pods(rounds),
        "ping" => ping(rounds),
        "repair" => repair(reps),
        "all" => convergence(reps).and_then(|()| pods(rounds)),
        other => Err(format!(
            "unknown benchmark {other:?}: use convergence, pods, ping, repair or all"
        )),
    };
    if let Err(e) = result {
        eprintln!("lab-bench: {e}");
        std::process::exit(1);
    }
}

/// Deletes something of node 2's entries on node 1 (`what`), then polls
/// until node 1 has the device and all three entries again; `reps` times.
fn repair(reps: usize) -> Result<(), String> {
    let mut cfg = LabConfig::new("vxlan", "embedded");
    cfg.nodes = 2;
    cfg.pods_per_node = 1;
    // Far beyond a run: a repair can only come from kernel notifications.
    cfg.resync_period = Some("10m");
    let lab = Lab::up('r', &cfg).map_err(|e| e.to_string())?;
    let nodes = lab.nodes().map_err(|e| e.to_string())?;
    let ns1 = lab.node_ns(1);
    let n2 = nodes
        .iter()
        .find(|n| n.index == 2)
        .ok_or("no node 2 in the lab")?;
    let net2 = n2.subnet_net().ok_or("node 2 has no subnet")?;
    let mac2 = lab::link_mac(&lab.node_ns(2), lab::VXLAN_DEV).ok_or("node 2 has no flannel.1")?;
    let complete = || {
        lab::netns_has_link(&ns1, lab::VXLAN_DEV)
            && lab::peer_entries(&ns1, &net2, Some(&mac2)).is_ok_and(|e| e.len() == 3)
    };
    let cases: [(&str, Vec<String>); 3] = [
        (
            "ip link del flannel.1",
            vec![
                "ip".into(),
                "-n".into(),
                ns1.clone(),
                "link".into(),
                "del".into(),
                lab::VXLAN_DEV.into(),
            ],
        ),
        (
            "ip route del <node 2 subnet>",
            vec![
                "ip".into(),
                "-n".into(),
                ns1.clone(),
                "route".into(),
                "del".into(),
                net2.clone(),
            ],
        ),
        (
            "bridge fdb del <node 2 VTEP MAC>",
            vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                ns1.clone(),
                "bridge".into(),
                "fdb".into(),
                "del".into(),
                mac2.clone(),
                "dev".into(),
                lab::VXLAN_DEV.into(),
            ],
        ),
    ];
    println!("repair after a deletion on node 1 (resync 10 min: kernel notifications only), {reps} runs each");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "deleted", "p50 ms", "p99 ms", "max ms", "runs"
    );
    for (what, cmd) in cases {
        let mut samples = Vec::new();
        for _ in 0..reps {
            lab::wait_for("all entries in place", Duration::from_secs(30), || {
                complete()
                    .then_some(())
                    .ok_or_else(|| "incomplete".to_string())
            })
            .map_err(|e| e.to_string())?;
            let start = Instant::now();
            let st = Command::new(&cmd[0])
                .args(&cmd[1..])
                .status()
                .map_err(|e| format!("{what}: {e}"))?;
            if !st.success() {
                return Err(format!("{what} failed: {st}"));
            }
            let (_, _) = lab::wait_for(
                &format!("repair after {what}"),
                Duration::from_secs(30),
                || {
                    complete()
                        .then_some(())
                        .ok_or_else(|| "incomplete".to_string())
                },
            )
            .map_err(|e| e.to_string())?;
            samples.push(start.elapsed());
            // Let the daemon's own follow-up pass (its changes make no
            // notifications it acts on, but a deletion of a stale entry
            // would) settle before the next run.
            std::thread::sleep(Duration::from_millis(200));
        }
        samples.sort();
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            what,
            ms(median(&samples).unwrap_or_default()),
            ms(percentile(&samples, 99.0).unwrap_or_default()),
            ms(*samples.last().unwrap_or(&Duration::ZERO)),
            samples.len()
        );
    }
    Ok(())
}

fn etcd_addr() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 254], 2379))
}

/// A fake peer: subnet 10.<a>.<b>.0/24 of the bench network, a public IP
/// in TEST-NET-1 (nothing is ever sent there: no pod talks to fake peers)
/// and a unique VTEP MAC.
fn fake_peer(i: usize) -> (String, String, String) {
    let subnet = format!("10.{}.{}.0", 8 + i / 256, i % 256);
    let key = format!("{PREFIX}/subnets/{subnet}-24");
    let value = serde_json::json!({
        "PublicIP": format!("192.0.2.{}", 1 + i % 250),
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": format!("02:fc:00:00:{:02x}:{:02x}", i / 256, i % 256)},
    })
    .to_string();
    (key, value, format!("{subnet}/24"))
}

/// `ip -n <ns> monitor route` lines, each with the instant it was read.
fn monitor_routes(
    ns: &str,
) -> Result<(std::process::Child, mpsc::Receiver<(Instant, String)>), String> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "monitor", "route"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("ip monitor: {e}"))?;
    let out = child.stdout.take().ok_or("ip monitor has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

fn wait_line(
    rx: &mpsc::Receiver<(Instant, String)>,
    pred: impl Fn(&str) -> bool,
    within: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok((t, l)) if pred(&l) => return Some(t),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

fn proc_stat(pid: i64) -> Result<(u64, u64), String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Ok((rss, ticks))
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn convergence(reps: usize) -> Result<(), String> {
    // One real node; fake peers live in 10.8.0.0/13 and up, the node's own
    // subnet is somewhere in 10.0.0.0/12 too: skip it.
    let mut cfg = LabConfig::new("vxlan", "etcd");
    cfg.nodes = 1;
    cfg.pods_per_node = 0;
    cfg.network = "10.0.0.0/12";
    let lab = Lab::up('b', &cfg).map_err(|e| e.to_string())?;
    let node = lab.nodes().map_err(|e| e.to_string())?.remove(0);
    let own = node.subnet_net().unwrap_or_default();
    let pid = node.pid.ok_or("daemon pid unknown")?;
    let infra = lab.infra_ns();
    let ns = lab.node_ns(1);
    let peers: Vec<_> = (0..1100).map(fake_peer).filter(|p| p.2 != own).collect();

    // (a) one peer at a time.
    let (mut mon, rx) = monitor_routes(&ns)?;
    let mut samples = Vec::new();
    for (key, value, net) in peers.iter().take(reps) {
        let (_, committed) = etcd_http::post(
            &infra,
            etcd_addr(),
            "/v3/kv/put",
            &etcd_http::put_body(key, value),
        )
        .map_err(|e| e.to_string())?;
        let seen = wait_line(&rx, |l| l.starts_with(net.as_str()), Duration::from_secs(5))
            .ok_or(format!("route {net} not programmed within 5 s"))?;
        samples.push(seen.saturating_duration_since(committed));
        let del = serde_json::json!({"key": etcd_http::base64(key.as_bytes())});
        etcd_http::post(&infra, etcd_addr(), "/v3/kv/deleterange", &del)
            .map_err(|e| e.to_string())?;
        wait_line(
            &rx,
            |l| l.starts_with(&format!("Deleted {net}")),
            Duration::from_secs(5),
        )
        .ok_or(format!("route {net} not removed within 5 s"))?;
    }
    let _ = mon.kill();
    let _ = mon.wait();
    let p50 = median(&samples).unwrap_or_default();
    let p99 = percentile(&samples, 99.0).unwrap_or_default();
    println!(
        "convergence, 1 peer (n={}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(samples.iter().max().copied().unwrap_or_default())
    );

    // (b) 1,000 peers in one transaction.
    let (rss0, ticks0) = proc_stat(pid)?;
    let batch: Vec<(String, String)> = peers
        .iter()
        .take(1000)
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    let (_, committed) = etcd_http::post(
        &infra,
        etcd_addr(),
        "/v3/kv/txn",
        &etcd_http::txn_body(&batch),
    )
    .map_err(|e| e.to_string())?;
    let count = || -> usize {
        lab::ip_in(&ns, &["route", "show", "dev", lab::VXLAN_DEV])
            .map(|o| o.lines().filter(|l| l.starts_with("10.")).count())
            .unwrap_or(0)
    };
    let (n, took) = loop {
        let n = count();
        let took = committed.elapsed();
        if n >= 1000 || took > Duration::from_secs(60) {
            break (n, took);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (rss1, ticks1) = proc_stat(pid)?;
    let fdb = lab::ns_run(&ns, "bridge", &["fdb", "show", "dev", lab::VXLAN_DEV])
        .map(|o| o.lines().filter(|l| l.starts_with("02:fc:")).count())
        .unwrap_or(0);
    let neigh = lab::ip_in(&ns, &["neigh", "show", "dev", lab::VXLAN_DEV])
        .map(|o| o.lines().count())
        .unwrap_or(0);
    println!(
        "convergence, 1,000 peers in one txn: {n} routes ({fdb} fdb, {neigh} neighbours) after {:.0} ms (routes polled every 10 ms)",
        ms(took)
    );
    let hz = ticks_per_sec();
    println!(
        "daemon: RSS {:.1} MiB before, {:.1} MiB with 1,000 peers; CPU to program them {:.2} s",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (ticks1 - ticks0) as f64 / hz
    );
    let idle = Duration::from_secs(30);
    std::thread::sleep(idle);
    let (rss2, ticks2) = proc_stat(pid)?;
    println!(
        "daemon idle with 1,000 peers over {} s (periodic resync included): CPU {:.2}% of one core, RSS {:.1} MiB",
        idle.as_secs(),
        100.0 * (ticks2 - ticks1) as f64 / hz / idle.as_secs_f64(),
        rss2 as f64 / 1024.0
    );
    Ok(())
}

/// RTT samples (ms) from ping's per-packet `time=` fields.
fn ping_rtts(ns: &str, ip: &str, count: u32) -> Result<Vec<Duration>, String> {
    let out = lab::ns_run(ns, "ping", &["-c", &count.to_string(), "-i", "0.01", ip])
        .map_err(|e| e.to_string())?;
    Ok(out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|v| Duration::from_secs_f64(v / 1000.0))
        .collect())
}

fn pods(rounds: usize) -> Result<(), String> {
    let kinds = [
        ("vxlan", 1500),
        ("host-gw", 1500),
        ("vxlan", 9001),
        ("host-gw", 9001),
    ];
    let mut labs = Vec::new();
    for (backend, mtu) in kinds {
        let mut cfg = LabConfig::new(backend, "embedded");
        cfg.nodes = 2;
        cfg.pods_per_node = 1;
        cfg.underlay_mtu = mtu;
        let lab = Lab::up('p', &cfg).map_err(|e| format!("{backend} mtu {mtu}: {e}"))?;
        let pods = lab.pods().map_err(|e| e.to_string())?;
        labs.push((backend, mtu, lab, pods));
    }
    let mut rtts: Vec<Vec<Duration>> = vec![Vec::new(); labs.len()];
    let mut bps: Vec<Vec<f64>> = vec![Vec::new(); labs.len()];
    for _ in 0..rounds {
        for (i, (_, _, _, pods)) in labs.iter().enumerate() {
            let (a, b) = (&pods[0], &pods[1]);
            rtts[i].extend(ping_rtts(&a.netns, &b.ip, 200)?);
            bps[i].push(lab::iperf3(&b.netns, &a.netns, &b.ip, 3)?);
        }
    }
    println!("| backend | underlay MTU | RTT p50 (ms) | RTT p99 (ms) | TCP Gbit/s (median of {rounds}) |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (i, (backend, mtu, _, _)) in labs.iter().enumerate() {
        let mut b = bps[i].clone();
        b.sort_by(f64::total_cmp);
        let med = b.get(b.len() / 2).copied().unwrap_or(0.0);
        medians.push(med);
        println!(
            "| {backend} | {mtu} | {:.3} | {:.3} | {:.2} |",
            ms(median(&rtts[i]).unwrap_or_default()),
            ms(percentile(&rtts[i], 99.0).unwrap_or_default()),
            med / 1e9
        );
    }
    if medians[1] > 0.0 && medians[3] > 0.0 {
        println!(
            "VXLAN / host-gw throughput: {:.2}x at MTU 1500, {:.2}x at MTU 9001",
            medians[0] / medians[1],
            medians[2] / medians[3]
        );
    }
    Ok(())
}

/// Sparse traffic: a ping every 10 ms between the pods of two nodes, for
/// every datapath (underlay MTU 9001), with the userspace datapath also
/// at `--userspace-busy-poll` 0 and 10ms. Unlike back-to-back
/// request/response (`flannelctl compare`), each ping finds the engine's
/// threads asleep unless the busy-poll window covers the 10 ms gap.
/// Rounds interleave the labs; RTTs pooled over the rounds.
fn ping(rounds: usize) -> Result<(), String> {
    let kinds: [(&'static str, &str); 7] = [
        ("host-gw", ""),
        ("vxlan", ""),
        ("vxlan-metadata", ""),
        ("vxlan-userspace", ""),
        ("vxlan-userspace", "--userspace-busy-poll=0"),
        ("vxlan-userspace", "--userspace-busy-poll=10ms"),
        ("geneve-userspace", ""),
    ];
    let mut labs = Vec::new();
    for (i, (backend, flag)) in kinds.iter().enumerate() {
        let mut cfg = LabConfig::new(backend, "embedded");
        cfg.nodes = 2;
        cfg.pods_per_node = 1;
        cfg.underlay_mtu = 9001;
        if !flag.is_empty() {
            cfg.daemon_args = vec![flag.to_string()];
        }
        // Lab stems must differ: one letter per lab.
        let stem = (b'a' + i as u8) as char;
        let lab = Lab::up(stem, &cfg).map_err(|e| format!("{backend} {flag}: {e}"))?;
        let pods = lab.pods().map_err(|e| e.to_string())?;
        labs.push((backend, flag, lab, pods));
    }
    let mut rtts: Vec<Vec<Duration>> = vec![Vec::new(); labs.len()];
    for _ in 0..rounds {
        for (i, (_, _, _, pods)) in labs.iter().enumerate() {
            rtts[i].extend(ping_rtts(&pods[0].netns, &pods[1].ip, 200)?);
        }
    }
    println!("| datapath | daemon flag | RTT p50 (ms) | RTT p99 (ms) | pings |");
    println!("|---|---|---|---|---|");
    for (i, (backend, flag, _, _)) in labs.iter().enumerate() {
        println!(
            "| {backend} | {} | {:.3} | {:.3} | {} |",
            if flag.is_empty() { "-" } else { flag },
            ms(median(&rtts[i]).unwrap_or_default()),
            ms(percentile(&rtts[i], 99.0).unwrap_or_default()),
            rtts[i].len()
        );
    }
    Ok(())
}
