//! Calling a CNI plugin directly the way a runtime does: config on stdin,
//! CNI_* environment, result or error JSON on stdout.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::{self, CmdError};

/// Where the reference CNI plugins (bridge, host-local, portmap, ...) are
/// installed: the default CNI_PATH.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Plugin(Box<PluginFailure>),
    #[error("{plugin} {command} printed something that is not JSON: {stdout:?}")]
    NotJson {
        plugin: String,
        command: String,
        stdout: String,
    },
}

/// A plugin that exited non-zero, with the CNI error it printed (if any).
#[derive(Debug, thiserror::Error)]
#[error("{plugin} {command} failed (exit {status}): code {code:?}, msg {msg:?}; stdout: {stdout}; stderr: {stderr}")]
pub struct PluginFailure {
    pub plugin: String,
    pub command: String,
    pub status: String,
    pub code: Option<i64>,
    pub msg: Option<String>,
    pub stdout: String,
    pub stderr: String,
}

/// One invocation's environment.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    /// None sends an empty CNI_NETNS (allowed for DEL).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub cni_path: String,
    pub args: String,
}

impl CniEnv {
    pub fn new(command: &str, container_id: &str, netns: Option<&Path>, ifname: &str) -> Self {
        CniEnv {
            command: command.to_string(),
            container_id: container_id.to_string(),
            netns: netns.map(Path::to_path_buf),
            ifname: ifname.to_string(),
            cni_path: REFERENCE_PLUGIN_DIR.to_string(),
            args: String::new(),
        }
    }

    /// The command for `plugin` with this environment, optionally wrapped
    /// (e.g. `Netns::exec`) so the plugin runs in a node namespace.
    pub fn apply(&self, cmd: &mut Command) {
        let netns = self
            .netns
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        cmd.env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_ARGS", &self.args);
    }
}

/// Runs the prepared plugin command (`cmd` already names the plugin, possibly
/// behind `nsenter`) with `env` and `config`, returning the parsed stdout
/// (empty stdout, as DEL prints, gives `Value::Null`).
pub fn invoke(
    mut cmd: Command,
    plugin: &str,
    env: &CniEnv,
    config: &[u8],
) -> Result<serde_json::Value, CniError> {
    env.apply(&mut cmd);
    let out = cmd::output_with_stdin(&mut cmd, Some(config))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed = if stdout.trim().is_empty() {
        Ok(serde_json::Value::Null)
    } else {
        serde_json::from_str::<serde_json::Value>(&stdout)
    };
    if !out.status.success() {
        let err = parsed.as_ref().ok();
        return Err(CniError::Plugin(Box::new(PluginFailure {
            plugin: plugin.to_string(),
            command: env.command.clone(),
            status: out.status.to_string(),
            code: err.and_then(|v| v.get("code")).and_then(|c| c.as_i64()),
            msg: err
                .and_then(|v| v.get("msg"))
                .and_then(|m| m.as_str())
                .map(str::to_string),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })));
    }
    parsed.map_err(|_| CniError::NotJson {
        plugin: plugin.to_string(),
        command: env.command.clone(),
        stdout,
    })
}

/// What a plugin run by [`run_raw`] printed and whether it exited 0.
#[derive(Debug)]
pub struct Reply {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// Stdout as JSON; panics showing both streams when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code of a failed run; panics on success.
    pub fn code(&self) -> u64 {
        assert!(
            !self.success,
            "expected failure, got success: {}",
            self.stdout
        );
        self.json()["code"].as_u64().expect("error has a code")
    }

    /// Panics unless the run succeeded.
    pub fn ok(self) -> Self {
        assert!(
            self.success,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `cmd` (the plugin, perhaps started in a namespace with
/// [`crate::netns::command_in`]) with exactly the environment a runtime
/// gives: nothing inherited but `PATH`, `CNI_PATH` the reference plugins,
/// then `env` as given (which may leave out or garble any CNI_* variable),
/// and `stdin` as the config. For tests of bad input; [`invoke`] is the
/// typed path.
pub fn run_raw(mut cmd: Command, env: &[(&str, &str)], stdin: &[u8]) -> Result<Reply, CmdError> {
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_PATH", REFERENCE_PLUGIN_DIR)
        .envs(env.iter().copied());
    let out = cmd::output_with_stdin(&mut cmd, Some(stdin))?;
    Ok(Reply {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Addresses (`"10.244.7.2/24"`) of a CNI result's `ips` list.
pub fn result_addresses(result: &serde_json::Value) -> Vec<String> {
    result
        .get("ips")
        .and_then(|ips| ips.as_array())
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// flannel's subnet.env text (see FLANNEL-COMPAT.md); `subnet` is the first
/// usable address with the prefix, e.g. `10.244.7.1/24`.
pub fn subnet_env_text(network: &str, subnet: &str, mtu: u32, ipmasq: bool) -> String {
    format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ipmasq}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_ips() {
        let v = serde_json::json!({"ips":[{"address":"10.244.7.2/24"},{"address":"fd00::2/64"}]});
        assert_eq!(result_addresses(&v), vec!["10.244.7.2/24", "fd00::2/64"]);
        assert!(result_addresses(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn plugin_error_json_is_decoded() {
        let env = CniEnv::new("ADD", "c1", None, "eth0");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config"}'; exit 1"#,
        ]);
        match invoke(cmd, "fake", &env, b"{}") {
            Err(CniError::Plugin(f)) => {
                assert_eq!(f.code, Some(7));
                assert_eq!(f.msg.as_deref(), Some("bad config"));
            }
            other => panic!("expected a plugin error, got {other:?}"),
        }
    }

    #[test]
    fn env_reaches_the_plugin() {
        let env = CniEnv::new("DEL", "cid-9", None, "eth1");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"cat >/dev/null; printf '{"c":"%s","id":"%s","ns":"%s","if":"%s"}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME""#,
        ]);
        let v = invoke(cmd, "fake", &env, b"{}").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"c":"DEL","id":"cid-9","ns":"","if":"eth1"})
        );
    }

    #[test]
    fn run_raw_gives_only_the_listed_environment() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"cat; printf ' %s %s %s' "$CNI_COMMAND" "$CNI_PATH" "${HOME:-nohome}""#,
        ]);
        let r = run_raw(cmd, &[("CNI_COMMAND", "VERSION")], b"{}").unwrap();
        assert!(r.success);
        assert_eq!(r.stdout, "{} VERSION /usr/lib/cni nohome");
    }

    #[test]
    fn subnet_env_has_flannel_keys() {
        let t = subnet_env_text("10.244.0.0/16", "10.244.7.1/24", 1450, true);
        assert_eq!(
            t,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
    }
}
