//! Running the tools the lab drives (`ip`, `etcdctl`, the CNI plugin) with
//! errors that name the command and show what it printed.

use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ShError {
    #[error("could not start `{cmd}`: {source} (is it installed? see scripts/setup.sh)")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}{stdout}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
}

/// The command line as typed, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with `stdin`, failing on a non-zero exit; returns stdout.
pub fn run_input(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, ShError> {
    let name = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let spawn_err = |source| ShError::Spawn {
        cmd: name.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(ShError::Failed {
            cmd: name,
            status: out.status,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(stdout)
}

pub fn run(cmd: &mut Command) -> Result<String, ShError> {
    run_input(cmd, None)
}

/// `ip <args>`.
pub fn ip(args: &[&str]) -> Result<String, ShError> {
    run(Command::new("ip").args(args))
}

/// `ip netns exec <ns> <program>`: the program sees the namespace's own
/// /sys too, which tools reading /sys/class/net need.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Names of all network namespaces (`ip netns list` prints `name (id: N)`).
pub fn list_netns() -> Result<Vec<String>, ShError> {
    Ok(parse_netns_list(&ip(&["netns", "list"])?))
}

pub fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

pub fn netns_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

/// Pids of the processes inside namespace `ns`.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_list_parsing() {
        let out = "fct-lab-a-node1 (id: 3)\nfct-lab-a-infra\n\n";
        assert_eq!(
            parse_netns_list(out),
            vec!["fct-lab-a-node1".to_string(), "fct-lab-a-infra".to_string()]
        );
    }

    #[test]
    fn failures_carry_the_output() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 2"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("boom") && msg.contains("sh -c"), "{msg}");
    }
}
