//! Go flanneld's command line, as unit files and DaemonSets carry it,
//! turned into ours before clap sees it. Go parses flags with its standard
//! library, so `-iface eth0`, `-iface=eth0`, `--ip-masq=false` and `-v=2`
//! are all valid there. Every flag of Go flanneld v0.20.2 through v0.28 is
//! in `GO_FLAGS`: either it means the same here (the single-dash form is
//! rewritten to ours) or it is accepted and ignored with one warning that
//! says why. Nothing Go accepts makes this daemon refuse to start.

use std::ffi::OsString;

/// What a Go flag becomes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Same name and meaning.
    Same,
    /// klog's `-v`: verbosity, mapped to our log level (unless RUST_LOG).
    Verbosity,
    /// Accepted and ignored, with the reason given in the warning.
    Ignored(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoFlag {
    pub name: &'static str,
    /// A boolean flag: Go takes a value only as `-flag=value`.
    pub boolean: bool,
    pub status: Status,
}

const fn same(name: &'static str) -> GoFlag {
    GoFlag {
        name,
        boolean: false,
        status: Status::Same,
    }
}

const fn same_bool(name: &'static str) -> GoFlag {
    GoFlag {
        name,
        boolean: true,
        status: Status::Same,
    }
}

const fn ignored(name: &'static str, boolean: bool, why: &'static str) -> GoFlag {
    GoFlag {
        name,
        boolean,
        status: Status::Ignored(why),
    }
}

/// Every flag of Go flanneld v0.20.2..v0.28 (docs/DAEMON.md has the table).
pub const GO_FLAGS: &[GoFlag] = &[
    same("etcd-endpoints"),
    same("etcd-prefix"),
    same("etcd-keyfile"),
    same("etcd-certfile"),
    same("etcd-cafile"),
    same("etcd-username"),
    same("etcd-password"),
    same("iface"),
    same("iface-regex"),
    same("iface-can-reach"),
    same("subnet-file"),
    same("public-ip"),
    same("public-ipv6"),
    same("subnet-lease-renew-margin"),
    same_bool("ip-masq"),
    same_bool("kube-subnet-mgr"),
    same("kube-api-url"),
    same("kube-annotation-prefix"),
    same("kubeconfig-file"),
    same("healthz-ip"),
    same("healthz-port"),
    same("net-config-path"),
    same_bool("version"),
    same_bool("help"),
    same_bool("h"),
    GoFlag {
        name: "v",
        boolean: false,
        status: Status::Verbosity,
    },
    ignored(
        "vmodule",
        false,
        "per-file log verbosity is klog's; set RUST_LOG (e.g. flanneld=debug) instead",
    ),
    ignored(
        "log_backtrace_at",
        false,
        "klog stack traces at a source line have no equivalent here",
    ),
    ignored(
        "iptables-resync",
        false,
        "our rules are checked and restored at every --resync-period (default 10s)",
    ),
    ignored(
        "iptables-forward-rules",
        true,
        "forward accepts for the cluster network come with --ip-masq, in this daemon's own nftables table",
    ),
    ignored(
        "ip-masq-fully-random-disable",
        true,
        "masquerading always uses fully random source ports, as Go flanneld does by default",
    ),
    ignored(
        "ip-blackhole-route",
        true,
        "no blackhole route is installed for this node's own subnet",
    ),
    ignored(
        "set-node-network-unavailable",
        true,
        "in Kubernetes mode NetworkUnavailable=False is always set once the node is ready",
    ),
    ignored(
        "use-multi-cluster-cidr",
        true,
        "the MultiClusterCIDR API was removed from Kubernetes (1.29); the node's podCIDRs are used",
    ),
    ignored(
        "persistent-mac",
        true,
        "the VTEP MAC is always kept: derived from the node's address, or the existing device's (see --vtep-mac-file)",
    ),
];

pub fn lookup(name: &str) -> Option<&'static GoFlag> {
    GO_FLAGS.iter().find(|f| f.name == name)
}

/// The command line for clap, and what to tell the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalized {
    pub args: Vec<OsString>,
    /// One warning per ignored flag given (command line or environment).
    pub warnings: Vec<String>,
    /// `-v=N` (or `FLANNELD_V`), when given.
    pub verbosity: Option<u32>,
    /// A `-v` value that is not a number (reported, then ignored).
    pub bad_verbosity: Option<String>,
}

/// Rewrites Go-style flags in `args` (the first item is the program name);
/// `env` reads `FLANNELD_*` variables, which Go also honours for the
/// ignored flags.
pub fn normalize(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Normalized {
    let mut out = Normalized::default();
    let mut given: Vec<&'static str> = Vec::new();
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        out.args.push(program);
    }
    let mut rest_verbatim = false;
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str().map(str::to_string) else {
            out.args.push(arg);
            continue;
        };
        if rest_verbatim || text == "--" || !text.starts_with('-') || text == "-" {
            rest_verbatim |= text == "--";
            out.args.push(arg);
            continue;
        }
        let body = text.strip_prefix("--").unwrap_or(&text[1..]);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = lookup(name) else {
            // Not a Go flag (one of ours, or a typo clap will name).
            out.args.push(arg);
            continue;
        };
        match flag.status {
            Status::Same => {
                let long = if flag.name == "h" { "help" } else { flag.name };
                match inline {
                    Some(v) => out.args.push(format!("--{long}={v}").into()),
                    None => {
                        out.args.push(format!("--{long}").into());
                        // The value goes through untouched, even if it
                        // starts with a dash.
                        if !flag.boolean {
                            if let Some(v) = it.next() {
                                out.args.push(v);
                            }
                        }
                    }
                }
            }
            Status::Verbosity => {
                let value = inline.or_else(|| it.next().and_then(|v| v.into_string().ok()));
                set_verbosity(&mut out, value.as_deref().unwrap_or(""));
            }
            Status::Ignored(why) => {
                let value = match (inline, flag.boolean) {
                    (Some(v), _) => Some(v),
                    (None, true) => None,
                    (None, false) => it.next().and_then(|v| v.into_string().ok()),
                };
                if !given.contains(&flag.name) {
                    given.push(flag.name);
                    out.warnings
                        .push(ignored_warning(flag.name, value.as_deref(), why));
                }
            }
        }
    }
    for flag in GO_FLAGS {
        let var = env_name(flag.name);
        match flag.status {
            Status::Verbosity if out.verbosity.is_none() && out.bad_verbosity.is_none() => {
                if let Some(v) = env(&var) {
                    set_verbosity(&mut out, &v);
                }
            }
            Status::Ignored(why) if !given.contains(&flag.name) => {
                if let Some(v) = env(&var) {
                    out.warnings
                        .push(format!("{var}={v} is accepted and ignored: {why}"));
                }
            }
            _ => {}
        }
    }
    out
}

fn set_verbosity(out: &mut Normalized, value: &str) {
    match value.trim().parse::<u32>() {
        Ok(n) => out.verbosity = Some(n),
        Err(_) => out.bad_verbosity = Some(value.to_string()),
    }
}

fn ignored_warning(name: &str, value: Option<&str>, why: &str) -> String {
    match value {
        Some(v) => format!("--{name}={v} is accepted and ignored: {why}"),
        None => format!("--{name} is accepted and ignored: {why}"),
    }
}

/// `FLANNELD_<NAME>` as Go's flagutil spells it.
pub fn env_name(flag: &str) -> String {
    format!("FLANNELD_{}", flag.to_uppercase().replace('-', "_"))
}

/// The log level for klog verbosity `v`: flannel logs its routine detail
/// at V(1) to V(4) and per-packet detail above.
pub fn level_for(v: u32) -> &'static str {
    match v {
        0 => "info",
        1..=4 => "debug",
        _ => "trace",
    }
}

/// `--kube-annotation-prefix` the way Go flanneld reads it: without a
/// slash one is appended (`flannel.alpha.coreos.com` ->
/// `flannel.alpha.coreos.com/`); with one that does not end the prefix, a
/// dash joins the names (`example.com/net` -> `example.com/net-`); two or
/// more slashes are refused, as Go refuses them.
pub fn annotation_prefix(prefix: &str) -> Result<String, String> {
    let slashes = prefix.matches('/').count();
    if slashes > 1 {
        return Err(format!(
            "--kube-annotation-prefix {prefix:?} has {slashes} slashes; at most one is allowed (e.g. flannel.alpha.coreos.com or example.com/flannel)"
        ));
    }
    let mut p = prefix.trim().to_string();
    if p.is_empty() {
        return Err(
            "--kube-annotation-prefix is empty: give a domain such as flannel.alpha.coreos.com"
                .into(),
        );
    }
    if slashes == 0 {
        p.push('/');
    }
    if !p.ends_with('/') && !p.ends_with('-') {
        p.push('-');
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Normalized {
        run_env(args, &[])
    }

    fn run_env(args: &[&str], vars: &[(&str, &str)]) -> Normalized {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        normalize(
            std::iter::once("flanneld")
                .chain(args.iter().copied())
                .map(OsString::from),
            move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        )
    }

    fn args(n: &Normalized) -> Vec<String> {
        n.args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn single_dash_go_flags_become_ours() {
        let n = run(&[
            "-iface",
            "eth0",
            "-iface=eth1",
            "-ip-masq",
            "-kube-subnet-mgr=true",
            "-etcd-endpoints=http://10.0.0.1:2379",
            "-iface-regex",
            "-weird",
        ]);
        assert_eq!(
            args(&n),
            [
                "--iface",
                "eth0",
                "--iface=eth1",
                "--ip-masq",
                "--kube-subnet-mgr=true",
                "--etcd-endpoints=http://10.0.0.1:2379",
                "--iface-regex",
                "-weird"
            ]
        );
        assert!(n.warnings.is_empty());
        // Ours, unknown ones and everything after `--` pass through.
        let n = run(&["--store-path", "/x", "-bogus", "--", "-iface"]);
        assert_eq!(args(&n), ["--store-path", "/x", "-bogus", "--", "-iface"]);
        assert_eq!(args(&run(&["-h"])), ["--help"]);
        assert_eq!(args(&run(&["-version"])), ["--version"]);
    }

    #[test]
    fn verbosity_is_taken_out_and_mapped() {
        for form in [&["-v=2"][..], &["--v=2"], &["-v", "2"]] {
            let n = run(form);
            assert_eq!(n.verbosity, Some(2), "{form:?}");
            assert!(args(&n).is_empty(), "{form:?}");
        }
        assert_eq!(run_env(&[], &[("FLANNELD_V", "5")]).verbosity, Some(5));
        assert_eq!(run(&["-v=x"]).bad_verbosity.as_deref(), Some("x"));
        assert_eq!(level_for(0), "info");
        assert_eq!(level_for(2), "debug");
        assert_eq!(level_for(10), "trace");
    }

    #[test]
    fn ignored_flags_are_removed_with_their_values_and_warned_about_once() {
        let n = run(&[
            "--iptables-resync",
            "5",
            "-iptables-forward-rules=false",
            "--ip-masq",
            "--iptables-resync=7",
            "-vmodule=vxlan=4",
            "--persistent-mac",
            "--ip-blackhole-route",
            "--set-node-network-unavailable=false",
            "--use-multi-cluster-cidr",
            "--ip-masq-fully-random-disable",
            "--log_backtrace_at",
            "x.go:1",
        ]);
        assert_eq!(args(&n), ["--ip-masq"]);
        assert_eq!(n.warnings.len(), 9, "{:#?}", n.warnings);
        assert!(n.warnings[0].starts_with("--iptables-resync=5 is accepted and ignored: "));
        assert!(n.warnings[1].contains("--iptables-forward-rules=false"));
        // A boolean flag does not swallow the next argument.
        let n = run(&["--persistent-mac", "--iface", "eth0"]);
        assert_eq!(args(&n), ["--iface", "eth0"]);
        // The environment too, unless the command line gave the flag.
        let n = run_env(
            &["--iptables-resync=5"],
            &[
                ("FLANNELD_IPTABLES_RESYNC", "9"),
                ("FLANNELD_IP_BLACKHOLE_ROUTE", "true"),
            ],
        );
        assert_eq!(n.warnings.len(), 2, "{:#?}", n.warnings);
        assert!(
            n.warnings[1].starts_with("FLANNELD_IP_BLACKHOLE_ROUTE=true is accepted and ignored")
        );
    }

    #[test]
    fn every_flag_is_listed_once() {
        for (i, f) in GO_FLAGS.iter().enumerate() {
            assert!(
                GO_FLAGS[i + 1..].iter().all(|g| g.name != f.name),
                "{} twice",
                f.name
            );
        }
        assert_eq!(env_name("log_backtrace_at"), "FLANNELD_LOG_BACKTRACE_AT");
        assert_eq!(env_name("ip-masq"), "FLANNELD_IP_MASQ");
    }

    /// A Go flanneld command line using every flag (values as operators
    /// write them) parses and validates: none makes the daemon refuse to
    /// start.
    #[test]
    fn every_go_flag_is_accepted_by_the_daemon() {
        use clap::Parser;
        let value = |name: &str| match name {
            "etcd-endpoints" => "http://127.0.0.1:2379,http://127.0.0.1:4001",
            "etcd-prefix" => "/coreos.com/network",
            "etcd-keyfile" | "etcd-certfile" | "etcd-cafile" => "/etc/flannel/x.pem",
            "etcd-username" | "etcd-password" => "flannel",
            "iface" => "eth0",
            "iface-regex" => "^eth",
            "iface-can-reach" => "192.0.2.1",
            "subnet-file" => "/run/flannel/subnet.env",
            "public-ip" => "192.0.2.7",
            "public-ipv6" => "2001:db8::7",
            "subnet-lease-renew-margin" => "60",
            "kube-api-url" => "https://192.0.2.1:6443",
            "kube-annotation-prefix" => "flannel.alpha.coreos.com",
            "kubeconfig-file" => "/etc/kubernetes/kubeconfig",
            "healthz-ip" => "0.0.0.0",
            "healthz-port" => "8471",
            "net-config-path" => "/etc/kube-flannel/net-conf.json",
            "v" => "2",
            "vmodule" => "vxlan=4",
            "log_backtrace_at" => "main.go:1",
            "iptables-resync" => "5",
            _ => "true",
        };
        for single_dash in [false, true] {
            let dash = if single_dash { "-" } else { "--" };
            let mut args = vec!["flanneld".to_string()];
            for f in GO_FLAGS {
                if matches!(f.name, "help" | "h" | "version") {
                    continue;
                }
                args.push(format!("{dash}{}={}", f.name, value(f.name)));
            }
            let n = normalize(args.into_iter().map(OsString::from), |_| None);
            let mut cli = crate::cli::Cli::try_parse_from(n.args.clone())
                .unwrap_or_else(|e| panic!("{:?}: {e}", n.args));
            cli.node_name = Some("node-a".into());
            let s = cli
                .settings()
                .unwrap_or_else(|e| panic!("{:?}: {e}", n.args));
            assert!(s.ip_masq);
            assert_eq!(n.verbosity, Some(2));
            let ignored = GO_FLAGS
                .iter()
                .filter(|f| matches!(f.status, Status::Ignored(_)))
                .count();
            assert_eq!(n.warnings.len(), ignored, "{:#?}", n.warnings);
        }
    }

    #[test]
    fn annotation_prefix_follows_go() {
        assert_eq!(
            annotation_prefix("flannel.alpha.coreos.com").unwrap(),
            "flannel.alpha.coreos.com/"
        );
        assert_eq!(
            annotation_prefix("flannel.alpha.coreos.com/").unwrap(),
            "flannel.alpha.coreos.com/"
        );
        assert_eq!(
            annotation_prefix("example.com/net").unwrap(),
            "example.com/net-"
        );
        assert_eq!(
            annotation_prefix("example.com/net-").unwrap(),
            "example.com/net-"
        );
        assert!(annotation_prefix("a/b/c")
            .unwrap_err()
            .contains("at most one"));
        assert!(annotation_prefix("").is_err());
    }
}
