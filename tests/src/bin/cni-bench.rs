//! cni-bench: ADD and DEL latency of our `flannel-rs` CNI plugin against
//! Debian's reference `bridge` + `host-local`, measured side by side in one
//! run. Each plugin gets its own node namespace with bridge `cni0` and subnet
//! 10.244.7.0/24; pod namespaces are created beforehand and not timed. Calls
//! alternate between the plugins (A B, then B A, ...) so machine noise hits
//! both alike. Timed: fork + exec + the plugin's run until exit.
//!
//! DEL is also followed until the kernel is done with the pair, outside the
//! timed call, from DEL's start: (1) "unlisted", the host-side veth's index
//! (looked up before the call) no longer resolves in the node namespace;
//! (2) "done", every process the DEL left behind has exited: the bench is a
//! child subreaper, so flannel-rs's background deleter is re-parented to
//! it and reaped here. The kernel unlists a deleted link early and then
//! waits (RCU barrier, references draining) inside the deleting call, so
//! (2) is when its work for this DEL ended. Waiting for both before the
//! next call also keeps the background work off the other plugin's timed
//! calls.
//!
//! Also counted per ADD: how often the plugin lost the CPU (getrusage of
//! the waited-for child: involuntary = preempted, voluntary = slept), which
//! is where wall time above CPU time goes on a loaded machine.
//!
//! Targets (median wall ratio ours / reference): ADD at most 1/8, DEL at
//! most 1/4. Exit status 0 = both met, 2 = measured but missed, 1 = error.
//!
//! `--against PATH` runs a second flannel-rs build in the reference's place
//! (same configuration, its own node namespace and store): an A/B of two
//! builds, to tell whether a change to the plugin helps.
//!
//! `--floor` runs, in flannel-rs's place, `tests/bench/cni-floor.c`: only
//! the kernel work of the attachment (veth pair, bridge port, pod address
//! and routes, reservation file), compiled here. Its ratio is the lowest
//! any plugin building this datapath can reach on the machine; there is
//! no target for it.
//!
//! Run as root: `cargo run --release -p e2e --bin cni-bench -- --pods 50`.
//! See docs/PERFORMANCE.md.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use e2e::stats::{median, ms, percentile};
use testkit::cni::{self, CniEnv};
use testkit::netns::Netns;

type Error = Box<dyn std::error::Error>;

const NETWORK: &str = "fctbench";
const GATEWAY: &str = "10.244.7.1";
/// Median wall-time ratio flannel-rs / reference to meet, per command:
/// ADD at 1/8 (issue 20), DEL at 1/4.
const TARGET_ADD: f64 = 0.125;
const TARGET_DEL: f64 = 0.25;

struct Side {
    label: &'static str,
    plugin: PathBuf,
    config: Vec<u8>,
    node: Netns,
    pods: Vec<Netns>,
    add: Vec<Duration>,
    del: Vec<Duration>,
    add_cpu: Vec<Duration>,
    del_cpu: Vec<Duration>,
    /// Per ADD: how often the plugin (and its helpers) gave up the CPU,
    /// (involuntary = preempted by another task, voluntary = slept).
    add_switches: Vec<Switches>,
    /// DEL start until the host veth no longer resolves.
    del_unlisted: Vec<Duration>,
    /// DEL start until the processes it left behind have exited.
    del_done: Vec<Duration>,
    /// CPU time of those processes (the background deleter).
    del_bg_cpu: Vec<Duration>,
    /// Per pod, the host-side veth its ADD reported.
    host_veths: Vec<Option<String>>,
}

/// How long a veth may take to disappear after DEL before the run fails.
const GONE_LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on a thread inside network namespace `ns` (interface look-ups
/// by name and index go through the calling thread's namespace).
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    Ok(testkit::in_netns(ns, f)?)
}

/// Reaps one exited orphan. Some(true): reaped one, Some(false): some are
/// still running, None: there are none.
fn reap_orphan() -> Option<bool> {
    let mut status = 0;
    // SAFETY: waitpid writes only status.
    match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
        0 => Some(false),
        pid if pid > 0 => Some(true),
        _ => None,
    }
}

/// Context switches of waited-for descendants, from getrusage.
#[derive(Clone, Copy, Default)]
struct Switches {
    involuntary: i64,
    voluntary: i64,
}

fn rusage_children() -> Option<libc::rusage> {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return None;
    }
    Some(ru)
}

fn children_switches() -> Switches {
    rusage_children()
        .map(|ru| Switches {
            involuntary: ru.ru_nivcsw,
            voluntary: ru.ru_nvcsw,
        })
        .unwrap_or_default()
}

fn link_exists(index: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has the IF_NAMESIZE bytes if_indextoname writes at most.
    !unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null()
}

/// CPU time (user + system) of all waited-for descendants so far. The
/// difference across one call is that call's CPU time, including helpers it
/// ran (host-local under bridge); unlike wall time it does not grow while a
/// busy machine keeps the plugin waiting for a core.
fn children_cpu() -> Duration {
    let Some(ru) = rusage_children() else {
        return Duration::ZERO;
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

impl Side {
    /// Runs one CNI command; returns (wall time, CPU time, stdout JSON).
    fn call(
        &self,
        command: &str,
        pod: usize,
    ) -> Result<(Duration, Duration, serde_json::Value), Error> {
        self.call_counted(command, pod)
            .map(|(t, cpu, out, _)| (t, cpu, out))
    }

    /// As `call`, and how often the call gave up the CPU.
    fn call_counted(
        &self,
        command: &str,
        pod: usize,
    ) -> Result<(Duration, Duration, serde_json::Value, Switches), Error> {
        let pod_ns = &self.pods[pod];
        let env = CniEnv::new(
            command,
            &format!("bench-{pod}"),
            Some(&pod_ns.path()),
            "eth0",
        );
        let cmd = self.node.spawn_in(&self.plugin)?;
        let cpu = children_cpu();
        let switches = children_switches();
        let start = Instant::now();
        let out = cni::invoke(cmd, self.label, &env, &self.config)?;
        let wall = start.elapsed();
        let after = children_switches();
        let switches = Switches {
            involuntary: after.involuntary - switches.involuntary,
            voluntary: after.voluntary - switches.voluntary,
        };
        Ok((wall, children_cpu().saturating_sub(cpu), out, switches))
    }

    fn add(&mut self, pod: usize, timed: bool) -> Result<(), Error> {
        let (t, cpu, result, switches) = self.call_counted("ADD", pod)?;
        if cni::result_addresses(&result).is_empty() {
            return Err(format!(
                "{} ADD for pod {pod} returned no address: {result}",
                self.label
            )
            .into());
        }
        self.host_veths[pod] = result["interfaces"][1]["name"].as_str().map(str::to_string);
        if timed {
            self.add.push(t);
            self.add_cpu.push(cpu);
            self.add_switches.push(switches);
        }
        Ok(())
    }

    fn del(&mut self, pod: usize, timed: bool) -> Result<(), Error> {
        let name = self.host_veths[pod]
            .clone()
            .ok_or_else(|| format!("{} ADD for pod {pod} named no host veth", self.label))?;
        let c_name = CString::new(name.clone())?;
        // SAFETY: a valid C string.
        let index = in_netns(&self.node, || unsafe {
            libc::if_nametoindex(c_name.as_ptr())
        })?;
        if index == 0 {
            return Err(format!(
                "{}: host veth {name} of pod {pod} not found before DEL",
                self.label
            )
            .into());
        }
        let start = Instant::now();
        let (t, cpu, _) = self.call("DEL", pod)?;
        let cpu_before_bg = children_cpu();
        // Poll every 100 us: fine enough for 15-30 ms, light on the CPU
        // the kernel's deletion needs. waitpid works from any thread.
        let (unlisted, done) = in_netns(&self.node, || {
            let (mut unlisted, mut done) = (None, None);
            while unlisted.is_none() || done.is_none() {
                if unlisted.is_none() && !link_exists(index) {
                    unlisted = Some(start.elapsed());
                }
                while done.is_none() {
                    match reap_orphan() {
                        Some(true) => continue,
                        Some(false) => break,
                        None => done = Some(start.elapsed()),
                    }
                }
                if start.elapsed() > GONE_LIMIT {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            (unlisted, done)
        })?;
        let (Some(unlisted), Some(done)) = (unlisted, done) else {
            return Err(format!(
                "{}: host veth #{index} ({name}) or its deleter still there {GONE_LIMIT:?} after DEL",
                self.label
            )
            .into());
        };
        if timed {
            self.del.push(t);
            self.del_cpu.push(cpu);
            self.del_unlisted.push(unlisted);
            self.del_done.push(done);
            self.del_bg_cpu
                .push(children_cpu().saturating_sub(cpu_before_bg));
        }
        Ok(())
    }
}

const USAGE: &str = "usage: cni-bench [--pods N] [--against FLANNEL_RS | --floor] [--gap-ms MS]   (default 50 pods, no gap, run as root)";

/// What to run: pods per plugin, and instead of the reference plugins a
/// second flannel-rs build to compare with (an A/B of two builds).
struct Opts {
    pods: usize,
    against: Option<PathBuf>,
    /// A pause before each timed ADD (not timed): pods started seconds
    /// apart, as on a real node, instead of back to back. The kernel
    /// batches some deferred link work (linkwatch) over a second, so the
    /// cadence changes what an ADD runs into.
    gap: Duration,
    /// The kernel floor program in flannel-rs's place (`e2e::floor`).
    floor: bool,
}

fn parse_args(args: &[String]) -> Result<Opts, Error> {
    let mut opts = Opts {
        pods: 50,
        against: None,
        gap: Duration::ZERO,
        floor: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--floor" {
            opts.floor = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} wants a value; {USAGE}"))?;
        match flag.as_str() {
            "--pods" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("--pods wants a number, got {value:?}"))?;
                if !(1..=250).contains(&n) {
                    return Err("--pods must be 1..=250 (one /24 per plugin)".into());
                }
                opts.pods = n;
            }
            "--against" => {
                let path = PathBuf::from(value);
                if !path.is_file() {
                    return Err(
                        format!("--against {value}: no such file (a flannel-rs binary)").into(),
                    );
                }
                opts.against = Some(path);
            }
            "--gap-ms" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("--gap-ms wants milliseconds, got {value:?}"))?;
                if ms > 60_000 {
                    return Err("--gap-ms must be at most 60000".into());
                }
                opts.gap = Duration::from_millis(ms);
            }
            _ => return Err(USAGE.into()),
        }
    }
    if opts.floor && opts.against.is_some() {
        return Err(format!("--floor and --against both replace a side: pick one; {USAGE}").into());
    }
    Ok(opts)
}

fn side(
    label: &'static str,
    plugin: PathBuf,
    config: serde_json::Value,
    pods: usize,
) -> Result<Side, Error> {
    let node = Netns::create("bench-node")?;
    // +1: a warm-up pod per side, whose ADD creates the bridge; not timed.
    let pods = (0..=pods)
        .map(|_| Netns::create("bench-pod"))
        .collect::<Result<Vec<_>, _>>()?;
    let host_veths = vec![None; pods.len()];
    Ok(Side {
        label,
        plugin,
        config: config.to_string().into_bytes(),
        node,
        pods,
        add: Vec::new(),
        del: Vec::new(),
        add_cpu: Vec::new(),
        del_cpu: Vec::new(),
        add_switches: Vec::new(),
        del_unlisted: Vec::new(),
        del_done: Vec::new(),
        del_bg_cpu: Vec::new(),
        host_veths,
    })
}

fn row(op: &str, s: &Side, wall: &[Duration], cpu: &[Duration]) -> String {
    let (Some(m), Some(p), Some(c)) = (median(wall), percentile(wall, 99.0), median(cpu)) else {
        return format!("{op:<4} {:<20} no samples", s.label);
    };
    format!(
        "{op:<4} {:<20} {:>10.2} {:>10.2} {:>14.2}",
        s.label,
        ms(m),
        ms(p),
        ms(c)
    )
}

fn after_row(what: &str, s: &Side, samples: &[Duration], cpu: &[Duration]) -> String {
    match (median(samples), percentile(samples, 99.0), median(cpu)) {
        (Some(m), Some(p), Some(c)) => format!(
            "{what:<9} {:<20} {:>10.2} {:>10.2} {:>14.2}",
            s.label,
            ms(m),
            ms(p),
            ms(c)
        ),
        _ => format!("{what:<9} {:<20} no samples", s.label),
    }
}

fn switches_row(s: &Side) -> String {
    let n = s.add_switches.len().max(1) as f64;
    let sum = |f: fn(&Switches) -> i64| s.add_switches.iter().map(f).sum::<i64>() as f64 / n;
    format!(
        "     {:<20} involuntary {:>5.2}  voluntary {:>5.2}",
        s.label,
        sum(|w| w.involuntary),
        sum(|w| w.voluntary)
    )
}

fn ratio(ours: &[Duration], reference: &[Duration]) -> f64 {
    match (median(ours), median(reference)) {
        (Some(a), Some(b)) if !b.is_zero() => a.as_secs_f64() / b.as_secs_f64(),
        _ => f64::NAN,
    }
}

fn run(opts: Opts) -> Result<bool, Error> {
    let pods = opts.pods;
    testkit::root::require_root("cni-bench")?;
    // Orphans of the plugins (flannel-rs's background deleter) become our
    // children, so DEL's "done" time can be measured by reaping them.
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    let state = testkit::temp::temp_dir("bench")?;
    let subnet_file = state.path().join("subnet.env");
    std::fs::write(
        &subnet_file,
        cni::subnet_env_text("10.244.0.0/16", &format!("{GATEWAY}/24"), 1450, true),
    )?;
    let (ours_label, ours_plugin) = if opts.floor {
        eprintln!("cni-bench: compiling the kernel floor program (tests/bench/cni-floor.c)");
        ("kernel floor", e2e::floor::build(state.path())?)
    } else {
        eprintln!("cni-bench: building/locating flannel-rs (cargo build -p cni-plugin; may take minutes when stale)");
        ("flannel-rs", e2e::bins::flannel_rs()?)
    };
    let ref_plugin = match &opts.against {
        Some(b) => b.clone(),
        None => Path::new(e2e::bins::REFERENCE_PLUGIN_DIR).join("bridge"),
    };
    eprintln!(
        "cni-bench: {} vs {}; creating {} namespaces",
        ours_plugin.display(),
        ref_plugin.display(),
        2 * (pods + 2)
    );
    // flannel-rs's configuration; each side gets its own IPAM store.
    let flannel_conf = |store: &str| {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": NETWORK, "type": "flannel-rs",
            "bridge": "cni0", "subnetFile": subnet_file,
            "dataDir": state.path().join(store), "isDefaultGateway": true,
        })
    };
    let mut ours = side(ours_label, ours_plugin, flannel_conf("ipam-ours"), pods)?;
    let mut reference = match opts.against {
        // The same configuration as ours, its own store: only the build differs.
        Some(_) => side(
            "flannel-rs --against",
            ref_plugin,
            flannel_conf("ipam-against"),
            pods,
        )?,
        None => side(
            "bridge+host-local",
            ref_plugin,
            serde_json::json!({
                "cniVersion": "1.0.0", "name": NETWORK, "type": "bridge",
                "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "mtu": 1450,
                "ipam": {"type": "host-local", "dataDir": state.path().join("ipam-ref"),
                         "ranges": [[{"subnet": "10.244.7.0/24", "gateway": GATEWAY}]]},
            }),
            pods,
        )?,
    };
    let ab = opts.against.is_some();

    // Warm-up: bridge creation and first-run page cache, not timed. Pod 0
    // stays attached so the bridge keeps existing, as on a real node.
    ours.add(0, false)?;
    reference.add(0, false)?;
    for i in 1..=pods {
        let (first, second) = if i % 2 == 0 {
            (&mut ours, &mut reference)
        } else {
            (&mut reference, &mut ours)
        };
        std::thread::sleep(opts.gap);
        first.add(i, true)?;
        std::thread::sleep(opts.gap);
        second.add(i, true)?;
    }
    for i in 1..=pods {
        if i % 2 == 0 {
            ours.del(i, true)?;
            reference.del(i, true)?;
        } else {
            reference.del(i, true)?;
            ours.del(i, true)?;
        }
    }
    ours.del(0, false)?;
    reference.del(0, false)?;

    println!(
        "cni-bench: {pods} pods per plugin, ADD then DEL, alternating, one node netns each, {} ms between ADDs",
        opts.gap.as_millis()
    );
    println!(
        "{:<4} {:<20} {:>10} {:>10} {:>14}",
        "op", "plugin", "median ms", "p99 ms", "cpu median ms"
    );
    println!("{}", row("ADD", &ours, &ours.add, &ours.add_cpu));
    println!(
        "{}",
        row("ADD", &reference, &reference.add, &reference.add_cpu)
    );
    println!("{}", row("DEL", &ours, &ours.del, &ours.del_cpu));
    println!(
        "{}",
        row("DEL", &reference, &reference.del, &reference.del_cpu)
    );
    println!("after DEL, from its start (outside the timed call; cpu = background processes):");
    for side in [&ours, &reference] {
        println!(
            "{}",
            after_row("unlisted", side, &side.del_unlisted, &side.del_bg_cpu)
        );
        println!(
            "{}",
            after_row("done", side, &side.del_done, &side.del_bg_cpu)
        );
    }
    // Wall time above CPU time is time spent off the CPU: mostly waiting
    // to get it back after being preempted on a loaded machine.
    println!("ADD context switches per call (mean; involuntary = preempted, voluntary = slept):");
    for side in [&ours, &reference] {
        println!("{}", switches_row(side));
    }
    let add = ratio(&ours.add, &reference.add);
    let del = ratio(&ours.del, &reference.del);
    let floor = opts.floor;
    let target = if ab || floor {
        String::new()
    } else {
        format!("  (target ADD <= {TARGET_ADD}, DEL <= {TARGET_DEL})")
    };
    println!("ratio {ours_label}/reference (median wall): ADD {add:.3}  DEL {del:.3}{target}");
    println!(
        "ratio {ours_label}/reference (median cpu):  ADD {:.3}  DEL {:.3}",
        ratio(&ours.add_cpu, &reference.add_cpu),
        ratio(&ours.del_cpu, &reference.del_cpu)
    );
    println!(
        "ratio {ours_label}/reference (median from DEL start): unlisted {:.3}  done {:.3}",
        ratio(&ours.del_unlisted, &reference.del_unlisted),
        ratio(&ours.del_done, &reference.del_done)
    );
    if ab {
        // Two builds of ours: the ratios are the result, there is no target.
        println!("A/B of two flannel-rs builds: no target");
        return Ok(true);
    }
    if floor {
        // A measuring stick: no plugin doing this kernel work can beat it.
        println!(
            "kernel floor: no target; flannel-rs's (ADD <= {TARGET_ADD}) is reachable here only if this ratio is well under it"
        );
        return Ok(true);
    }
    let met = add <= TARGET_ADD && del <= TARGET_DEL;
    println!("target {}", if met { "met" } else { "MISSED" });
    Ok(met)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(run);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // Measured fine but missed the target: distinct from a failure.
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("cni-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_and_refuse() {
        let o = parse_args(&[]).unwrap();
        assert_eq!(o.pods, 50);
        assert!(o.against.is_none());
        assert_eq!(parse_args(&args(&["--pods", "7"])).unwrap().pods, 7);
        assert_eq!(
            parse_args(&args(&["--gap-ms", "1100"])).unwrap().gap,
            Duration::from_millis(1100)
        );
        // Any existing file is accepted as the second build.
        let exe = std::env::current_exe().unwrap();
        let o = parse_args(&args(&["--against", exe.to_str().unwrap(), "--pods", "3"])).unwrap();
        assert!(!o.floor);
        assert_eq!((o.pods, o.against), (3, Some(exe.clone())));
        // --floor takes no value and may come anywhere.
        let o = parse_args(&args(&["--floor", "--pods", "4"])).unwrap();
        assert_eq!((o.floor, o.pods), (true, 4));
        assert!(
            parse_args(&args(&["--pods", "4", "--floor"]))
                .unwrap()
                .floor
        );
        let both = parse_args(&args(&["--floor", "--against", exe.to_str().unwrap()]));
        assert!(both.err().unwrap().to_string().contains("pick one"));
        for bad in [
            &["--pods"][..],
            &["--pods", "0"],
            &["--pods", "x"],
            &["--against", "/nonexistent/fct-flannel-rs"],
            &["--bogus", "1"],
            &["--gap-ms", "-1"],
            &["--gap-ms", "60001"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
