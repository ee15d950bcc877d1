//! Forwarding accepts where an iptables FORWARD drop policy takes effect.
//!
//! A packet is forwarded only if every base chain on the forward hook lets
//! it through: an `accept` in our own nftables table ends only our chain,
//! and iptables' `filter FORWARD` (policy DROP under Docker, and on many
//! hardened hosts) still drops it. So, like Go flannel's FLANNEL-FWD, we
//! put a chain of our own into iptables' filter table and jump to it from
//! FORWARD, in each iptables flavour whose filter table exists:
//! iptables-nft (nftables table `ip filter`) and iptables-legacy (x_tables;
//! both hooks run, so both must accept).
//!
//! ```text
//! -N FLANNEL-RS-FWD
//! -A FLANNEL-RS-FWD -s <cluster> -m comment --comment flannel-rs -j ACCEPT
//! -A FLANNEL-RS-FWD -d <cluster> -m comment --comment flannel-rs -j ACCEPT
//! -A FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD
//! ```
//!
//! The jump is appended, as Go flannel does: rules an operator put before
//! it (Docker's DOCKER-USER, an explicit drop) keep their say. A flavour
//! whose filter table does not exist cannot drop anything and is left
//! alone (creating it would load x_tables for nothing); the daemon calls
//! `ensure` again at every resync, so a Docker started later is covered
//! within one period. We own exactly the chain and the jump carrying our
//! comment; `remove` takes both away and touches nothing else.
//!
//! The planning is pure (`plan_ensure`, `plan_remove` from `iptables -S`
//! output); `ForwardAccepts` runs the commands.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::Ipv4Net;

/// Our chain in the filter table.
pub const CHAIN: &str = "FLANNEL-RS-FWD";
/// The comment on every rule of ours (no spaces: `iptables -S` prints it
/// unquoted, so the comparison stays exact).
pub const COMMENT: &str = "flannel-rs";

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "running {program} {args}: {reason} (is the iptables package installed and are we root?)"
    )]
    Run {
        program: String,
        args: String,
        reason: String,
    },
}

/// An iptables flavour (both may be in use on one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Nft,
    Legacy,
}

impl Flavour {
    pub const ALL: [Flavour; 2] = [Flavour::Nft, Flavour::Legacy];

    pub fn binary(self) -> &'static str {
        match self {
            Flavour::Nft => "iptables-nft",
            Flavour::Legacy => "iptables-legacy",
        }
    }
}

/// Our chain's rules for `cluster`, as `iptables -S` prints them.
pub fn chain_rules(cluster: &[Ipv4Net]) -> Vec<String> {
    let mut out = Vec::new();
    for net in cluster {
        for dir in ["-s", "-d"] {
            out.push(format!(
                "-A {CHAIN} {dir} {net} -m comment --comment {COMMENT} -j ACCEPT"
            ));
        }
    }
    out
}

/// The jump from FORWARD, as `iptables -S` prints it.
pub fn jump_rule() -> String {
    format!("-A FORWARD -m comment --comment {COMMENT} -j {CHAIN}")
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// The iptables argument lists (after `-w -t filter`) that make one flavour
/// hold our accepts for `cluster`, given `iptables -S FORWARD` and
/// `iptables -S FLANNEL-RS-FWD` (`None`: the chain does not exist). Empty
/// when everything is in place.
pub fn plan_ensure(forward: &str, chain: Option<&str>, cluster: &[Ipv4Net]) -> Vec<Vec<String>> {
    let want = chain_rules(cluster);
    let mut cmds = Vec::new();
    match chain {
        None => {
            cmds.push(args(&format!("-N {CHAIN}")));
            cmds.extend(want.iter().map(|r| args(r)));
        }
        Some(text) => {
            let have: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with(&format!("-A {CHAIN} ")))
                .collect();
            if have != want.iter().map(String::as_str).collect::<Vec<_>>() {
                // Replaced as a whole: the chain is ours, and a flush plus
                // appends is short enough (the jump stays, so the window
                // only lacks the accepts of a changed chain).
                cmds.push(args(&format!("-F {CHAIN}")));
                cmds.extend(want.iter().map(|r| args(r)));
            }
        }
    }
    let jump = jump_rule();
    let jumps = forward.lines().filter(|l| l.trim() == jump).count();
    if jumps == 0 {
        cmds.push(args(&jump));
    }
    // A duplicate (two daemons racing, an old run) is dropped.
    for _ in 1..jumps {
        cmds.push(args(&jump.replacen("-A ", "-D ", 1)));
    }
    cmds
}

/// The argument lists that remove our jump(s) and chain from one flavour.
pub fn plan_remove(forward: &str, chain_exists: bool) -> Vec<Vec<String>> {
    let jump = jump_rule();
    let mut cmds: Vec<Vec<String>> = forward
        .lines()
        .filter(|l| l.trim() == jump)
        .map(|_| args(&jump.replacen("-A ", "-D ", 1)))
        .collect();
    if chain_exists {
        cmds.push(args(&format!("-F {CHAIN}")));
        cmds.push(args(&format!("-X {CHAIN}")));
    }
    cmds
}

/// Runs the plans with the real iptables binaries, in this namespace or
/// (tests, the lab) another one through `ip netns exec`.
#[derive(Debug, Default)]
pub struct ForwardAccepts {
    /// Prepended to every command (`ip netns exec NS`), empty for ours.
    prefix: Vec<String>,
    installed: AtomicBool,
}

impl ForwardAccepts {
    pub fn new() -> Self {
        ForwardAccepts::default()
    }

    pub fn in_netns(netns: &str) -> Self {
        ForwardAccepts {
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), netns.into()],
            installed: AtomicBool::new(false),
        }
    }

    /// True once the last `ensure` put our accepts in place in every
    /// flavour whose filter table exists (false after `remove`): the
    /// signal for removing Go flannel's FLANNEL-FWD, which then is no
    /// longer needed.
    pub fn installed(&self) -> bool {
        self.installed.load(Ordering::Acquire)
    }

    fn command(&self, program: &str) -> Command {
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `program args`; `Ok(None)` when it exits non-zero.
    fn output(&self, program: &str, args: &[String]) -> Result<Option<String>, ForwardError> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| ForwardError::Run {
                program: program.into(),
                args: args.join(" "),
                reason: e.to_string(),
            })?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    fn iptables(&self, f: Flavour, rest: &[String]) -> Result<Option<String>, ForwardError> {
        let mut a: Vec<String> = vec!["-w".into(), "5".into(), "-t".into(), "filter".into()];
        a.extend_from_slice(rest);
        self.output(f.binary(), &a)
    }

    fn must(&self, f: Flavour, rest: &[String]) -> Result<(), ForwardError> {
        let mut a: Vec<String> = vec!["-w".into(), "5".into(), "-t".into(), "filter".into()];
        a.extend_from_slice(rest);
        let out = self
            .command(f.binary())
            .args(&a)
            .output()
            .map_err(|e| ForwardError::Run {
                program: f.binary().into(),
                args: a.join(" "),
                reason: e.to_string(),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ForwardError::Run {
                program: f.binary().into(),
                args: a.join(" "),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// True when the flavour's filter table exists (so its FORWARD chain
    /// can drop). Reading never creates it.
    pub fn filter_table_exists(&self, f: Flavour) -> Result<bool, ForwardError> {
        match f {
            Flavour::Nft => {
                let a: Vec<String> = ["list", "table", "ip", "filter"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                match self.output("nft", &a) {
                    Ok(out) => Ok(out.is_some()),
                    // No nft binary: no nftables tables of iptables-nft.
                    Err(_) => Ok(false),
                }
            }
            Flavour::Legacy => {
                // Per network namespace: read by a process inside it.
                const NAMES: &str = "/proc/net/ip_tables_names";
                let names = if self.prefix.is_empty() {
                    // Absent when x_tables is not loaded: no legacy tables.
                    std::fs::read_to_string(NAMES).unwrap_or_default()
                } else {
                    self.output("cat", &[NAMES.to_string()])?
                        .unwrap_or_default()
                };
                Ok(names.lines().any(|l| l.trim() == "filter"))
            }
        }
    }

    fn binary_present(&self, f: Flavour) -> bool {
        self.output(f.binary(), &["--version".to_string()])
            .map(|o| o.is_some())
            .unwrap_or(false)
    }

    /// Puts our accepts in place in every flavour whose filter table
    /// exists; returns those flavours. Idempotent (nothing runs when all is
    /// in place).
    pub fn ensure(&self, cluster: &[Ipv4Net]) -> Result<Vec<Flavour>, ForwardError> {
        let mut done = Vec::new();
        let result = (|| {
            for f in Flavour::ALL {
                if !self.filter_table_exists(f)? {
                    continue;
                }
                if !self.binary_present(f) {
                    return Err(ForwardError::Run {
                        program: f.binary().into(),
                        args: "--version".into(),
                        reason: "its filter table exists but the binary is missing".into(),
                    });
                }
                let forward = self
                    .iptables(f, &["-S".into(), "FORWARD".into()])?
                    .unwrap_or_default();
                let chain = self.iptables(f, &["-S".into(), CHAIN.into()])?;
                for cmd in plan_ensure(&forward, chain.as_deref(), cluster) {
                    self.must(f, &cmd)?;
                }
                done.push(f);
            }
            Ok(())
        })();
        self.installed.store(result.is_ok(), Ordering::Release);
        result.map(|()| done)
    }

    /// Removes our jump and chain from every flavour that has them.
    pub fn remove(&self) -> Result<(), ForwardError> {
        self.installed.store(false, Ordering::Release);
        for f in Flavour::ALL {
            if !self.filter_table_exists(f)? || !self.binary_present(f) {
                continue;
            }
            let forward = self
                .iptables(f, &["-S".into(), "FORWARD".into()])?
                .unwrap_or_default();
            let chain_exists = self.iptables(f, &["-S".into(), CHAIN.into()])?.is_some();
            for cmd in plan_remove(&forward, chain_exists) {
                self.must(f, &cmd)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Vec<Ipv4Net> {
        vec!["10.244.0.0/16".parse().unwrap()]
    }

    fn lines(cmds: &[Vec<String>]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    const DOCKER_FORWARD: &str = "-P FORWARD DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
";

    #[test]
    fn a_fresh_table_gets_the_chain_its_accepts_and_the_jump_appended() {
        let cmds = lines(&plan_ensure(DOCKER_FORWARD, None, &cluster()));
        assert_eq!(
            cmds,
            [
                "-N FLANNEL-RS-FWD",
                "-A FLANNEL-RS-FWD -s 10.244.0.0/16 -m comment --comment flannel-rs -j ACCEPT",
                "-A FLANNEL-RS-FWD -d 10.244.0.0/16 -m comment --comment flannel-rs -j ACCEPT",
                "-A FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD",
            ]
        );
    }

    #[test]
    fn nothing_runs_when_all_is_in_place() {
        let forward = format!("{DOCKER_FORWARD}{}\n", jump_rule());
        let chain = format!("-N {CHAIN}\n{}\n", chain_rules(&cluster()).join("\n"));
        assert!(plan_ensure(&forward, Some(&chain), &cluster()).is_empty());
    }

    #[test]
    fn a_changed_or_edited_chain_is_rebuilt_and_duplicate_jumps_dropped() {
        let forward = format!("-P FORWARD DROP\n{j}\n{j}\n", j = jump_rule());
        let chain = format!("-N {CHAIN}\n-A {CHAIN} -s 10.99.0.0/16 -j ACCEPT\n");
        let cmds = lines(&plan_ensure(&forward, Some(&chain), &cluster()));
        assert_eq!(
            cmds,
            [
                "-F FLANNEL-RS-FWD",
                "-A FLANNEL-RS-FWD -s 10.244.0.0/16 -m comment --comment flannel-rs -j ACCEPT",
                "-A FLANNEL-RS-FWD -d 10.244.0.0/16 -m comment --comment flannel-rs -j ACCEPT",
                "-D FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD",
            ]
        );
    }

    #[test]
    fn remove_takes_only_ours() {
        let forward = format!("{DOCKER_FORWARD}{}\n", jump_rule());
        let cmds = lines(&plan_remove(&forward, true));
        assert_eq!(
            cmds,
            [
                "-D FORWARD -m comment --comment flannel-rs -j FLANNEL-RS-FWD",
                "-F FLANNEL-RS-FWD",
                "-X FLANNEL-RS-FWD",
            ]
        );
        assert!(plan_remove(DOCKER_FORWARD, false).is_empty());
    }
}
