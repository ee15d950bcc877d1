//! The CNI verbs. Each file is one command; this module picks the command,
//! decodes what it needs and turns the outcome into stdout + exit status.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;
pub mod version;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use lease_store::subnet_env::{SubnetEnv, SubnetEnvIoError};

use crate::config::{self, Config};
use crate::env::{self, Command, EnvError};
use crate::error::{code, CniError};
use crate::version::NEWEST;

/// What the binary prints and how it exits.
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// Runs one invocation. `get` reads environment variables.
pub fn run(stdin: &[u8], get: &dyn Fn(&str) -> Option<String>) -> Outcome {
    // Answer errors in the caller's version when it sent one we can read.
    let asked = config::requested_version(stdin).unwrap_or_else(|| NEWEST.as_str().to_string());
    match dispatch(stdin, get) {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => Outcome {
            stdout: e.to_json(&asked),
            success: false,
        },
    }
}

fn dispatch(stdin: &[u8], get: &dyn Fn(&str) -> Option<String>) -> Result<String, CniError> {
    let cmd = get("CNI_COMMAND")
        .filter(|s| !s.is_empty())
        .ok_or(EnvError::Missing("CNI_COMMAND"))?;
    let cmd = Command::parse(&cmd)?;
    if cmd == Command::Version {
        return Ok(version::version(stdin));
    }
    let cfg = config::parse(stdin)?;
    match cmd {
        Command::Add => {
            let att = env::attachment(get, true)?;
            add::add(&cfg, &att).map(|v| v.to_string())
        }
        Command::Del => {
            let att = env::attachment(get, false)?;
            del::del(&cfg, &att).map(|()| String::new())
        }
        Command::Check => {
            let att = env::attachment(get, true)?;
            check::check(&cfg, &att).map(|()| String::new())
        }
        Command::Status => status::status(&cfg).map(|()| String::new()),
        Command::Gc => gc::gc(&cfg).map(|()| String::new()),
        Command::Version => Ok(version::version(stdin)),
    }
}

/// The node's IPv4 lease as subnet.env states it.
pub struct NodeSubnet {
    /// The gateway address with the subnet's prefix (`10.244.7.1/24`).
    pub subnet: Ipv4Net,
    pub networks: Vec<Ipv4Net>,
    pub mtu: u32,
}

impl NodeSubnet {
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.addr()
    }
}

/// Reads subnet.env. Missing means the daemon has not got a lease yet:
/// "try again later" (11); unreadable contents are a decode failure (6).
pub fn node_subnet(cfg: &Config) -> Result<NodeSubnet, CniError> {
    let path = cfg.subnet_file.display();
    let env = SubnetEnv::read(&cfg.subnet_file).map_err(|e| match e {
        SubnetEnvIoError::Read { ref source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("{path} does not exist yet: flanneld-rs writes it once the node holds a subnet lease; retry when it is running"),
            )
        }
        SubnetEnvIoError::Parse { .. } => CniError::new(code::DECODE_FAILURE, e.to_string()),
        other => CniError::new(code::IO_FAILURE, other.to_string()),
    })?;
    let subnet = env.subnet.ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("{path} has no FLANNEL_SUBNET: this plugin assigns IPv4 addresses and IPv6-only nodes are not supported"),
        )
    })?;
    // flannel writes the gateway (first host) address; accept the network
    // address too and derive the gateway from it.
    let subnet = if subnet.addr() == subnet.network() {
        lease_store::subnet_env::first_host_v4(subnet)
    } else {
        subnet
    };
    Ok(NodeSubnet {
        subnet,
        networks: env.networks,
        mtu: env.mtu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(path: &std::path::Path) -> Config {
        let json = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "subnetFile": path});
        config::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn subnet_env_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        let cfg = cfg_with(&path);
        assert_eq!(node_subnet(&cfg).err().unwrap().code, code::TRY_AGAIN_LATER);
        std::fs::write(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
        // The network address form is accepted; the gateway is the first host.
        let n = node_subnet(&cfg).unwrap();
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 244, 7, 1));
        assert_eq!(n.mtu, 1450);
        std::fs::write(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/33\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
        assert_eq!(node_subnet(&cfg).err().unwrap().code, code::DECODE_FAILURE);
        std::fs::write(&path, "FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
        assert_eq!(node_subnet(&cfg).err().unwrap().code, code::INVALID_CONFIG);
        assert_eq!(status::status(&cfg).unwrap_err().code, code::NOT_AVAILABLE);
    }
}
