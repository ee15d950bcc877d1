//! Go flanneld's iptables footprint on a node taken over from it: the nat
//! chain `FLANNEL-POSTRTG` (masquerade, jumped to from POSTROUTING) and the
//! filter chain `FLANNEL-FWD` (accepts to and from the cluster network,
//! jumped to from FORWARD). Go leaves both behind when it stops; this daemon
//! masquerades from its own nftables table, so Go's rules would keep
//! applying the old node's view (its old subnet) forever.
//!
//! They are removed, in both iptables flavours (nft and legacy), only once
//! nothing depends on them any more:
//! - `FLANNEL-POSTRTG` once our masquerade rules are in place (or we run
//!   without `--ip-masq`: the operator asked for no masquerade);
//! - `FLANNEL-FWD` once the FORWARD chain of that flavour would accept pod
//!   traffic without it: its policy is ACCEPT, or the caller says this
//!   daemon's own forward accepts are installed. On a node whose FORWARD
//!   policy is DROP (Docker sets it) Go's chain is what keeps pods talking,
//!   so it stays until then.
//!
//! `--keep-go-iptables` skips all of this (for operators who may switch
//! back). Calls are synchronous (they run iptables): use `spawn_blocking`.

use std::process::Command;

/// One of Go's chains and the built-in chain that jumps to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoChain {
    pub table: &'static str,
    pub chain: &'static str,
    pub parent: &'static str,
}

pub const GO_POSTRTG: GoChain = GoChain {
    table: "nat",
    chain: "FLANNEL-POSTRTG",
    parent: "POSTROUTING",
};

pub const GO_FWD: GoChain = GoChain {
    table: "filter",
    chain: "FLANNEL-FWD",
    parent: "FORWARD",
};

/// The iptables front ends Go's rules may sit in (Go's go-iptables runs
/// whichever `iptables` the host's alternatives point to).
pub const FLAVOURS: [&str; 2] = ["iptables-nft", "iptables-legacy"];

#[derive(Debug, thiserror::Error)]
pub enum GoChainsError {
    #[error("running {cmd}: {reason}")]
    Run { cmd: String, reason: String },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

/// What a cleanup pass did, per flavour and chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `(flavour, chain)` removed with their jumps.
    pub removed: Vec<(String, &'static str)>,
    /// `(flavour, chain, why)` still present and kept for now.
    pub kept: Vec<(String, &'static str, String)>,
}

impl Outcome {
    /// True when nothing is left to do (no chain kept for later).
    pub fn done(&self) -> bool {
        self.kept.is_empty()
    }
}

/// Runs iptables front ends, optionally inside a named network namespace
/// (`ip netns exec`: the lab and tests, whose nodes are namespaces).
#[derive(Debug, Clone, Default)]
pub struct GoChains {
    netns: Option<String>,
}

impl GoChains {
    /// In the daemon's own namespace.
    pub fn new() -> Self {
        GoChains { netns: None }
    }

    pub fn in_netns(netns: &str) -> Self {
        GoChains {
            netns: Some(netns.to_string()),
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> (Command, String) {
        let shown = format!("{program} {}", args.join(" "));
        let cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]).args(args);
                c
            }
            None => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
        };
        (cmd, shown)
    }

    /// Runs `flavour -w <args>`: `Ok(None)` when the program is missing,
    /// `Ok(Some(Err(stderr)))` when it ran and failed.
    fn run(
        &self,
        flavour: &str,
        args: &[&str],
    ) -> Result<Option<Result<String, String>>, GoChainsError> {
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        let (mut cmd, shown) = self.command(flavour, &all);
        match cmd.output() {
            Ok(out) if out.status.success() => {
                Ok(Some(Ok(String::from_utf8_lossy(&out.stdout).into_owned())))
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                // `ip netns exec` reports a missing program on stderr.
                if self.netns.is_some()
                    && stderr.contains("No such file or directory")
                    && stderr.contains(flavour)
                {
                    return Ok(None);
                }
                Ok(Some(Err(stderr)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(GoChainsError::Run {
                cmd: shown,
                reason: e.to_string(),
            }),
        }
    }

    fn must(&self, flavour: &str, args: &[&str]) -> Result<String, GoChainsError> {
        match self.run(flavour, args)? {
            Some(Ok(out)) => Ok(out),
            Some(Err(stderr)) => Err(GoChainsError::Failed {
                cmd: format!("{flavour} -w {}", args.join(" ")),
                stderr,
            }),
            None => Err(GoChainsError::Run {
                cmd: format!("{flavour} -w {}", args.join(" ")),
                reason: "program not found".into(),
            }),
        }
    }

    /// Whether legacy iptables has any table in this namespace: asking it
    /// about a table would otherwise make the kernel create one.
    fn legacy_in_use(&self) -> bool {
        let names = match &self.netns {
            None => std::fs::read_to_string("/proc/net/ip_tables_names").ok(),
            Some(_) => {
                let (mut cmd, _) = self.command("cat", &["/proc/net/ip_tables_names"]);
                cmd.output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            }
        };
        names.is_some_and(|n| !n.trim().is_empty())
    }

    /// `iptables -S chain`: `Ok(None)` when the flavour is not installed,
    /// `Ok(Some(false))` when the chain (or its table) does not exist,
    /// `Ok(Some(true))` when it does; any other failure (e.g. the xtables
    /// lock file cannot be opened) is an error, so it is reported rather
    /// than taken for "no chain".
    fn chain_exists(&self, flavour: &str, c: GoChain) -> Result<Option<bool>, GoChainsError> {
        match self.run(flavour, &["-t", c.table, "-S", c.chain])? {
            None => Ok(None),
            Some(Ok(_)) => Ok(Some(true)),
            Some(Err(stderr)) if means_absent(&stderr) => Ok(Some(false)),
            Some(Err(stderr)) => Err(GoChainsError::Failed {
                cmd: format!("{flavour} -w -t {} -S {}", c.table, c.chain),
                stderr,
            }),
        }
    }

    /// The chains of Go flanneld present, as `(flavour, chain)`.
    pub fn present(&self) -> Result<Vec<(String, &'static str)>, GoChainsError> {
        let mut out = Vec::new();
        for flavour in FLAVOURS {
            if flavour == "iptables-legacy" && !self.legacy_in_use() {
                continue;
            }
            for c in [GO_POSTRTG, GO_FWD] {
                if self.chain_exists(flavour, c)? == Some(true) {
                    out.push((flavour.to_string(), c.chain));
                }
            }
        }
        Ok(out)
    }

    /// Removes Go's chains that nothing depends on any more (module doc).
    /// `masq_ready`: our masquerade is installed, or masquerading is off;
    /// `forward_ready`: our own forward accepts are installed.
    pub fn retire(&self, masq_ready: bool, forward_ready: bool) -> Result<Outcome, GoChainsError> {
        let mut outcome = Outcome::default();
        for flavour in FLAVOURS {
            if flavour == "iptables-legacy" && !self.legacy_in_use() {
                continue;
            }
            for c in [GO_POSTRTG, GO_FWD] {
                match self.chain_exists(flavour, c)? {
                    None => break,           // this flavour is not installed
                    Some(false) => continue, // no such chain (or table)
                    Some(true) => {}
                }
                let why_not = if c == GO_POSTRTG && !masq_ready {
                    Some("this daemon's masquerade rules are not in place yet".to_string())
                } else if c == GO_FWD && !forward_ready {
                    let listing = self.must(flavour, &["-t", c.table, "-S", c.parent])?;
                    match policy(&listing, c.parent) {
                        Some("ACCEPT") => None,
                        other => Some(format!(
                            "the FORWARD policy is {} and FLANNEL-FWD is what accepts pod traffic",
                            other.unwrap_or("unknown")
                        )),
                    }
                } else {
                    None
                };
                if let Some(why) = why_not {
                    outcome.kept.push((flavour.to_string(), c.chain, why));
                    continue;
                }
                self.remove(flavour, c)?;
                outcome.removed.push((flavour.to_string(), c.chain));
            }
        }
        Ok(outcome)
    }

    /// Deletes every jump to `c` from its parent (last first, so the
    /// numbers stay valid), then flushes and deletes the chain.
    fn remove(&self, flavour: &str, c: GoChain) -> Result<(), GoChainsError> {
        let listing = self.must(flavour, &["-t", c.table, "-S", c.parent])?;
        for n in jump_rule_numbers(&listing, c.parent, c.chain)
            .into_iter()
            .rev()
        {
            let n = n.to_string();
            self.must(flavour, &["-t", c.table, "-D", c.parent, &n])?;
        }
        self.must(flavour, &["-t", c.table, "-F", c.chain])?;
        self.must(flavour, &["-t", c.table, "-X", c.chain])?;
        Ok(())
    }
}

/// Whether an iptables error says the chain (or its table) is not there:
/// legacy says "No chain/target/match by that name", nft calls a chain in
/// a table it does not have "incompatible".
pub fn means_absent(stderr: &str) -> bool {
    ["No chain/target/match", "does not exist", "is incompatible"]
        .iter()
        .any(|m| stderr.contains(m))
}

/// The 1-based numbers of the rules of `chain` (in `iptables -S chain`
/// output) that jump to `target`, ascending.
pub fn jump_rule_numbers(listing: &str, chain: &str, target: &str) -> Vec<usize> {
    let prefix = format!("-A {chain} ");
    listing
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .enumerate()
        .filter(|(_, l)| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == target)
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// The policy of a built-in chain in `iptables -S chain` output.
pub fn policy<'a>(listing: &'a str, chain: &str) -> Option<&'a str> {
    let prefix = format!("-P {chain} ");
    listing
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `iptables -t nat -S POSTROUTING` on a node Go flanneld v0.20.2 ran on,
    // with kube-proxy's and Docker's rules around it.
    const POSTROUTING: &str = "-P POSTROUTING ACCEPT
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG
";

    #[test]
    fn jumps_are_found_by_target_and_numbered_like_iptables() {
        assert_eq!(
            jump_rule_numbers(POSTROUTING, "POSTROUTING", "FLANNEL-POSTRTG"),
            vec![2, 4]
        );
        assert_eq!(
            jump_rule_numbers(POSTROUTING, "POSTROUTING", "KUBE-POSTROUTING"),
            vec![1]
        );
        // A comment mentioning the chain is not a jump.
        let commented = "-A FORWARD -m comment --comment \"-j FLANNEL-FWD\" -j ACCEPT\n";
        assert!(jump_rule_numbers(commented, "FORWARD", "FLANNEL-FWD").is_empty());
        assert!(jump_rule_numbers("", "FORWARD", "FLANNEL-FWD").is_empty());
    }

    #[test]
    fn policy_is_read_from_the_listing() {
        assert_eq!(policy(POSTROUTING, "POSTROUTING"), Some("ACCEPT"));
        assert_eq!(
            policy("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n", "FORWARD"),
            Some("DROP")
        );
        assert_eq!(policy("-N FLANNEL-FWD\n", "FORWARD"), None);
    }

    #[test]
    fn missing_chains_are_told_from_failures() {
        assert!(means_absent(
            "iptables: No chain/target/match by that name."
        ));
        assert!(means_absent(
            "iptables v1.8.9 (nf_tables): chain `FLANNEL-FWD' in table `filter' is incompatible, use 'nft' tool."
        ));
        assert!(means_absent("iptables v1.8.9: can't initialize iptables table `nat': Table does not exist (do you need to insmod?)"));
        assert!(!means_absent(
            "Fatal: can't open lock file /run/xtables.lock: Read-only file system"
        ));
        assert!(!means_absent(
            "iptables v1.8.9: Permission denied (you must be root)"
        ));
    }

    #[test]
    fn outcome_is_done_only_when_nothing_was_kept() {
        let mut o = Outcome::default();
        assert!(o.done());
        o.kept
            .push(("iptables-nft".into(), "FLANNEL-FWD", "policy DROP".into()));
        assert!(!o.done());
    }
}
