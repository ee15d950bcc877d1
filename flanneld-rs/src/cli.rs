//! The daemon's command line: Go flannel's flag names (so existing
//! DaemonSets and unit files keep working), each also read from the
//! environment as `FLANNELD_<FLAG_UPPER_SNAKE>`, plus this project's
//! additions (embedded store, resync period, log format, lease TTL).
//!
//! `Cli` is what clap parses; `Cli::settings` validates the combination and
//! returns `Settings`, the checked form the rest of the daemon uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use crate::model::IfaceSpec;

/// Default etcd key prefix, flannel's.
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// etcd v3, flannel's layout (`--etcd-*`).
    Etcd,
    /// A single-host file store (`--store-path`), for labs and tests.
    Embedded,
    /// Kubernetes Node objects (`--kube-subnet-mgr`): podCIDRs and
    /// annotations.
    Kube,
}

/// Where Kubernetes mode's subnets come from (`--kube-subnet-source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum KubeSubnetSource {
    /// The controller manager's podCIDRs (`--allocate-node-cidrs`).
    #[default]
    Node,
    /// Lease objects in the daemon's namespace, allocated by the daemons
    /// themselves: for control planes that assign no podCIDRs (EKS).
    Lease,
}

/// Where a pod finds its namespace when POD_NAMESPACE is not set.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Net-conf.json in Kubernetes mode when `--net-config-path` is not given
/// (where kube-flannel's ConfigMap is mounted).
pub const DEFAULT_KUBE_NET_CONF: &str = "/etc/kube-flannel/net-conf.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "flanneld-rs",
    version,
    about = "flannel-rs node daemon: leases a pod subnet, programs the overlay, writes subnet.env"
)]
pub struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "FLANNELD_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// etcd key prefix holding `config` and `subnets/`.
    #[arg(long, env = "FLANNELD_ETCD_PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,

    /// TLS client key for etcd (with --etcd-certfile).
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<PathBuf>,

    /// TLS client certificate for etcd (with --etcd-keyfile).
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE")]
    pub etcd_certfile: Option<PathBuf>,

    /// CA bundle to verify etcd's certificate.
    #[arg(long, env = "FLANNELD_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,

    /// etcd user name (with --etcd-password).
    #[arg(long, env = "FLANNELD_ETCD_USERNAME")]
    pub etcd_username: Option<String>,

    /// etcd password (with --etcd-username).
    #[arg(long, env = "FLANNELD_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,

    /// Lease store: `etcd`, or `embedded` (a file shared by the nodes of one
    /// host). Default: embedded when --store-path is given, else etcd.
    #[arg(long, env = "FLANNELD_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Kubernetes mode: subnets are the nodes' podCIDRs (same as
    /// `--store kube`). Takes `=true`/`=false` like Go's flag.
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub kube_subnet_mgr: bool,

    /// Kubeconfig for Kubernetes mode (default: in-cluster service account).
    #[arg(long, env = "FLANNELD_KUBECONFIG_FILE")]
    pub kubeconfig_file: Option<PathBuf>,

    /// API server URL for Kubernetes mode (overrides the kubeconfig's).
    #[arg(long, env = "FLANNELD_KUBE_API_URL")]
    pub kube_api_url: Option<String>,

    /// Prefix of the node annotations in Kubernetes mode.
    #[arg(long, env = "FLANNELD_KUBE_ANNOTATION_PREFIX", default_value = lease_store::kube::DEFAULT_PREFIX)]
    pub kube_annotation_prefix: String,

    /// Kubernetes mode's subnets: `node` (podCIDRs, default) or `lease`
    /// (Lease objects in POD_NAMESPACE; for EKS).
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_SOURCE", value_enum)]
    pub kube_subnet_source: Option<KubeSubnetSource>,

    /// The daemon's namespace, from `POD_NAMESPACE` (the DaemonSet sets it
    /// from `metadata.namespace`): where `lease` mode keeps its Leases.
    #[arg(skip = std::env::var("POD_NAMESPACE").ok())]
    pub pod_namespace: Option<String>,

    /// This node's Node name, from `NODE_NAME` (the DaemonSet sets it from
    /// `spec.nodeName`), as Go flannel reads it: an environment variable,
    /// not a flag.
    #[arg(skip = std::env::var("NODE_NAME").ok())]
    pub node_name: Option<String>,

    /// The embedded store's file.
    #[arg(long, env = "FLANNELD_STORE_PATH")]
    pub store_path: Option<PathBuf>,

    /// Read net-conf.json from this file instead of the store.
    #[arg(long, env = "FLANNELD_NET_CONFIG_PATH")]
    pub net_config_path: Option<PathBuf>,

    /// Interface (name or IPv4 address) for inter-host traffic; repeatable,
    /// the first one that exists wins.
    #[arg(long, env = "FLANNELD_IFACE", value_delimiter = ',')]
    pub iface: Vec<String>,

    /// Regex matched against interface addresses, then names; repeatable.
    #[arg(long, env = "FLANNELD_IFACE_REGEX")]
    pub iface_regex: Vec<String>,

    /// Use the interface of the route to this address (when neither
    /// --iface nor --iface-regex is given: Go flanneld's order).
    #[arg(long, env = "FLANNELD_IFACE_CAN_REACH")]
    pub iface_can_reach: Option<IpAddr>,

    /// The IP peers send to (default: the interface's address), e.g. behind
    /// 1:1 NAT.
    #[arg(long, env = "FLANNELD_PUBLIC_IP")]
    pub public_ip: Option<Ipv4Addr>,

    /// The IPv6 address peers send to with Backend.Underlay "ipv6"
    /// (default: the interface's global IPv6 address).
    #[arg(long, env = "FLANNELD_PUBLIC_IPV6")]
    pub public_ipv6: Option<std::net::Ipv6Addr>,

    /// Where to write the node's subnet for the CNI plugin.
    #[arg(long, env = "FLANNELD_SUBNET_FILE", default_value = lease_store::subnet_env::DEFAULT_PATH)]
    pub subnet_file: PathBuf,

    /// Masquerade traffic leaving the cluster network. Takes
    /// `=true`/`=false` like Go's flag.
    #[arg(long, env = "FLANNELD_IP_MASQ", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ip_masq: bool,

    /// Renew the lease this many minutes before it expires (1-1439).
    #[arg(
        long,
        env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN",
        default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(1..=1439)
    )]
    pub subnet_lease_renew_margin: u32,

    /// Address of the health server (/healthz, /readyz, /metrics).
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "0.0.0.0")]
    pub healthz_ip: IpAddr,

    /// Port of the health server; 0 disables it (flannel's default).
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    pub healthz_port: u16,

    /// Health server as one `IP:PORT` (overrides --healthz-ip/--healthz-port).
    #[arg(long, env = "FLANNELD_HEALTHZ_ADDR")]
    pub healthz_addr: Option<SocketAddr>,

    /// A separate `IP:PORT` for /metrics (it is also on the health server).
    #[arg(long, env = "FLANNELD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// The CNI plugin's IPAM directory (the conflist's dataDir joined with
    /// its network name): /metrics reports the pod addresses in use and
    /// free from it. An empty value turns those two metrics off.
    #[arg(long, env = "FLANNELD_IPAM_DIR", default_value = crate::daemon::ops_metrics::DEFAULT_IPAM_DIR)]
    pub ipam_dir: PathBuf,

    /// Full reconcile of the datapath at this interval (e.g. 10s, 500ms).
    #[arg(long, env = "FLANNELD_RESYNC_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub resync_period: Duration,

    /// TTL of the lease in the store (e.g. 24h; flannel's is 24h).
    #[arg(long, env = "FLANNELD_LEASE_TTL", default_value = "24h", value_parser = parse_duration)]
    pub lease_ttl: Duration,

    /// Log format.
    #[arg(long, env = "FLANNELD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// How this node implements the cluster's tunnel, overriding
    /// net-conf.json's Backend.Mode here only (e.g. userspace on a kernel
    /// without the geneve module). Peers interoperate across modes.
    #[arg(long, env = "FLANNELD_DATAPATH_MODE", value_enum)]
    pub datapath_mode: Option<crate::backend::DatapathMode>,

    /// Userspace datapath only: how long a queue thread keeps looking for
    /// packets after its last one before it sleeps (e.g. 100us, 0 to sleep
    /// at once). Longer cuts request/response latency and costs CPU while
    /// traffic flows; at most 10ms.
    #[arg(long, env = "FLANNELD_USERSPACE_BUSY_POLL", default_value = "100us", value_parser = parse_duration)]
    pub userspace_busy_poll: Duration,

    /// Userspace datapath only: queues, each one thread with its own TUN
    /// fd and UDP socket (1-4; default: one per CPU, at most 4). Fewer
    /// leave CPUs to the pods.
    #[arg(long, env = "FLANNELD_USERSPACE_QUEUES")]
    pub userspace_queues: Option<usize>,

    /// Where the VTEP MAC of an adopted device (e.g. Go flanneld's random
    /// one) is remembered, so a device deleted while the daemon is down
    /// comes back with it (default: vtep-mac.json next to --subnet-file).
    #[arg(long, env = "FLANNELD_VTEP_MAC_FILE")]
    pub vtep_mac_file: Option<PathBuf>,

    /// Keep Go flanneld's iptables chains (FLANNEL-POSTRTG, FLANNEL-FWD) on
    /// a node taken over from it, e.g. to switch back; by default they are
    /// removed once this daemon's own rules are in place.
    #[arg(long, env = "FLANNELD_KEEP_GO_IPTABLES")]
    pub keep_go_iptables: bool,
}

/// A validation error: names the flag and says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--store embedded needs --store-path PATH (the lease file shared by the nodes)")]
    EmbeddedWithoutPath,
    #[error(
        "--store-path is only used with --store embedded; drop it or choose the embedded store"
    )]
    PathWithEtcd,
    #[error("--etcd-endpoints is empty: give at least one URL, e.g. http://127.0.0.1:2379")]
    NoEndpoints,
    #[error("--etcd-endpoints {0:?} is not a URL: use http://HOST:PORT or https://HOST:PORT")]
    BadEndpoint(String),
    #[error("--etcd-certfile and --etcd-keyfile go together: give both or neither")]
    HalfClientCert,
    #[error("--etcd-username and --etcd-password go together: give both or neither")]
    HalfAuth,
    #[error("--iface-regex {regex:?} is not a valid regular expression: {reason}")]
    BadRegex { regex: String, reason: String },
    #[error("--iface {0:?} is empty: give an interface name or an IPv4 address")]
    EmptyIface(String),
    #[error("--resync-period must be at least 100ms (got {0:?})")]
    ResyncTooShort(Duration),
    #[error("--kube-subnet-mgr and --store {0} contradict each other: drop one")]
    KubeAndOtherStore(String),
    #[error("Kubernetes mode needs NODE_NAME: set it to this node's name (in a DaemonSet, from the downward API field spec.nodeName)")]
    NoNodeName,
    #[error(
        "--kube-subnet-source only applies in Kubernetes mode: add --kube-subnet-mgr or drop it"
    )]
    SubnetSourceWithoutKube,
    #[error("--kube-subnet-source lease needs the daemon's namespace: set POD_NAMESPACE (in a DaemonSet, from the downward API field metadata.namespace)")]
    NoNamespace,
    #[error("--kube-api-url {0:?} is not a URL: use https://HOST:PORT or http://HOST:PORT")]
    BadKubeApiUrl(String),
    #[error("{0}")]
    BadAnnotationPrefix(String),
    #[error("--lease-ttl must be at least 10s (got {0:?}); the daemon renews before it runs out")]
    TtlTooShort(Duration),
    #[error("--userspace-busy-poll {0:?} is too long: a queue thread keeps a CPU busy that long after every burst of packets; use 0 to 10ms (default 100us)")]
    BusyPollTooLong(Duration),
    #[error("--userspace-queues {0} is out of range: use 1 to {max} (default: one per CPU, at most {max})", max = crate::backend::userspace::MAX_QUEUES)]
    QueuesOutOfRange(usize),
}

/// How to reach the lease store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Etcd(EtcdSettings),
    Embedded { path: PathBuf },
    Kube(KubeSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub api_url: Option<String>,
    pub node_name: String,
    pub annotation_prefix: String,
    pub subnet_source: KubeSubnetSource,
    /// Where `lease` mode keeps its Leases (`None` in `node` mode).
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub keyfile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub cafile: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub store: StoreSettings,
    pub net_config_path: Option<PathBuf>,
    pub iface: IfaceSpec,
    /// Further kinds given (Go's order), tried when `iface` finds nothing.
    pub iface_fallbacks: Vec<IfaceSpec>,
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    pub subnet_file: PathBuf,
    pub ip_masq: bool,
    pub renew_margin: Duration,
    pub healthz_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// `--ipam-dir`; `None` when set empty.
    pub ipam_dir: Option<PathBuf>,
    pub resync_period: Duration,
    pub lease_ttl: Duration,
    pub log_format: LogFormat,
    /// `--datapath-mode` and `--userspace-busy-poll`.
    pub datapath: crate::backend::NodeOverrides,
    /// `--vtep-mac-file` (default: vtep-mac.json next to --subnet-file).
    pub vtep_mac_file: PathBuf,
    /// `--keep-go-iptables`.
    pub keep_go_iptables: bool,
}

impl Cli {
    /// Checks the flags together and returns the settings.
    pub fn settings(&self) -> Result<Settings, CliError> {
        let kind = match (self.kube_subnet_mgr, self.store) {
            (true, Some(StoreKind::Kube) | None) => StoreKind::Kube,
            (true, Some(other)) => {
                return Err(CliError::KubeAndOtherStore(
                    format!("{other:?}").to_lowercase(),
                ))
            }
            (false, Some(k)) => k,
            (false, None) if self.store_path.is_some() => StoreKind::Embedded,
            (false, None) => StoreKind::Etcd,
        };
        if kind != StoreKind::Kube && self.kube_subnet_source.is_some() {
            return Err(CliError::SubnetSourceWithoutKube);
        }
        let store = match kind {
            StoreKind::Embedded => StoreSettings::Embedded {
                path: self
                    .store_path
                    .clone()
                    .ok_or(CliError::EmbeddedWithoutPath)?,
            },
            StoreKind::Etcd => {
                if self.store_path.is_some() {
                    return Err(CliError::PathWithEtcd);
                }
                StoreSettings::Etcd(self.etcd_settings()?)
            }
            StoreKind::Kube => {
                if self.store_path.is_some() {
                    return Err(CliError::PathWithEtcd);
                }
                StoreSettings::Kube(self.kube_settings()?)
            }
        };
        let net_config_path = match (&store, &self.net_config_path) {
            (_, Some(p)) => Some(p.clone()),
            (StoreSettings::Kube(_), None) => Some(PathBuf::from(DEFAULT_KUBE_NET_CONF)),
            (_, None) => None,
        };

        // Go flanneld's order: --iface, then --iface-regex, then
        // --iface-can-reach; each kind given is a fallback for the one
        // before it (none given: the default route).
        let mut kinds = Vec::new();
        if !self.iface.is_empty() {
            if let Some(empty) = self.iface.iter().find(|i| i.trim().is_empty()) {
                return Err(CliError::EmptyIface(empty.clone()));
            }
            kinds.push(IfaceSpec::Names(
                self.iface.iter().map(|i| i.trim().to_string()).collect(),
            ));
        }
        if !self.iface_regex.is_empty() {
            let regexes = self
                .iface_regex
                .iter()
                .map(|r| {
                    regex::Regex::new(r).map_err(|e| CliError::BadRegex {
                        regex: r.clone(),
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            kinds.push(IfaceSpec::Regexes(regexes));
        }
        if let Some(ip) = self.iface_can_reach {
            kinds.push(IfaceSpec::CanReach(ip));
        }
        let mut kinds = kinds.into_iter();
        let iface = kinds.next().unwrap_or(IfaceSpec::DefaultRoute);
        let iface_fallbacks: Vec<IfaceSpec> = kinds.collect();

        if self.resync_period < Duration::from_millis(100) {
            return Err(CliError::ResyncTooShort(self.resync_period));
        }
        if self.lease_ttl < Duration::from_secs(10) {
            return Err(CliError::TtlTooShort(self.lease_ttl));
        }
        if self.userspace_busy_poll > MAX_BUSY_POLL {
            return Err(CliError::BusyPollTooLong(self.userspace_busy_poll));
        }
        if let Some(q) = self.userspace_queues {
            if !(1..=crate::backend::userspace::MAX_QUEUES).contains(&q) {
                return Err(CliError::QueuesOutOfRange(q));
            }
        }

        let healthz_addr = match self.healthz_addr {
            Some(addr) => Some(addr),
            None if self.healthz_port != 0 => {
                Some(SocketAddr::new(self.healthz_ip, self.healthz_port))
            }
            None => None,
        };

        Ok(Settings {
            store,
            net_config_path,
            iface,
            iface_fallbacks,
            public_ip: self.public_ip,
            public_ipv6: self.public_ipv6,
            subnet_file: self.subnet_file.clone(),
            ip_masq: self.ip_masq,
            renew_margin: Duration::from_secs(u64::from(self.subnet_lease_renew_margin) * 60),
            healthz_addr,
            metrics_addr: self.metrics_addr,
            ipam_dir: Some(self.ipam_dir.clone()).filter(|d| !d.as_os_str().is_empty()),
            resync_period: self.resync_period,
            lease_ttl: self.lease_ttl,
            log_format: self.log_format,
            datapath: crate::backend::NodeOverrides {
                mode: self.datapath_mode,
                busy_poll: self.userspace_busy_poll,
                queues: self.userspace_queues,
            },
            vtep_mac_file: self.vtep_mac_file.clone().unwrap_or_else(|| {
                crate::backend::mac_memory::MacMemory::beside(&self.subnet_file)
                    .path()
                    .to_path_buf()
            }),
            keep_go_iptables: self.keep_go_iptables,
        })
    }

    fn kube_settings(&self) -> Result<KubeSettings, CliError> {
        let node_name = self
            .node_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or(CliError::NoNodeName)?
            .to_string();
        if let Some(u) = &self.kube_api_url {
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.len() <= "https://".len()
            {
                return Err(CliError::BadKubeApiUrl(u.clone()));
            }
        }
        // Go's reading: `flannel.alpha.coreos.com` gets its trailing slash.
        let annotation_prefix = crate::go_flags::annotation_prefix(&self.kube_annotation_prefix)
            .map_err(CliError::BadAnnotationPrefix)?;
        let subnet_source = self.kube_subnet_source.unwrap_or_default();
        let namespace = match subnet_source {
            KubeSubnetSource::Node => None,
            KubeSubnetSource::Lease => Some(
                self.pod_namespace
                    .clone()
                    .or_else(|| std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok())
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .ok_or(CliError::NoNamespace)?,
            ),
        };
        Ok(KubeSettings {
            kubeconfig: self.kubeconfig_file.clone(),
            api_url: self.kube_api_url.clone(),
            node_name,
            annotation_prefix,
            subnet_source,
            namespace,
        })
    }

    fn etcd_settings(&self) -> Result<EtcdSettings, CliError> {
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(CliError::NoEndpoints);
        }
        if let Some(bad) = endpoints.iter().find(|e| {
            !(e.starts_with("http://") || e.starts_with("https://")) || e.len() <= "https://".len()
        }) {
            return Err(CliError::BadEndpoint(bad.clone()));
        }
        if self.etcd_certfile.is_some() != self.etcd_keyfile.is_some() {
            return Err(CliError::HalfClientCert);
        }
        if self.etcd_username.is_some() != self.etcd_password.is_some() {
            return Err(CliError::HalfAuth);
        }
        Ok(EtcdSettings {
            endpoints,
            prefix: self.etcd_prefix.clone(),
            keyfile: self.etcd_keyfile.clone(),
            certfile: self.etcd_certfile.clone(),
            cafile: self.etcd_cafile.clone(),
            username: self.etcd_username.clone(),
            password: self.etcd_password.clone(),
        })
    }
}

/// The longest `--userspace-busy-poll`: beyond this the "poll" is a CPU
/// given over to the datapath.
const MAX_BUSY_POLL: Duration = Duration::from_millis(10);

/// Parses `100us`, `500ms`, `10s`, `5m`, `24h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{text:?} is not a duration: use a number with us, ms, s, m or h (e.g. 10s)")
    })?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use us, ms, s, m or h"
            ))
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec!["flanneld-rs"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
    }

    #[test]
    fn every_flag_has_its_flannel_env_name() {
        let cmd = Cli::command();
        let mut checked = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let want = format!("FLANNELD_{}", long.to_uppercase().replace('-', "_"));
            let got = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(got.as_deref(), Some(want.as_str()), "flag --{long}");
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} flags checked");
    }

    #[test]
    fn defaults_match_flannel() {
        let s = parse(&[]).unwrap().settings().unwrap();
        match &s.store {
            StoreSettings::Etcd(e) => {
                assert_eq!(e.endpoints, vec!["http://127.0.0.1:2379"]);
                assert_eq!(e.prefix, "/coreos.com/network");
            }
            other => panic!("default store should be etcd, got {other:?}"),
        }
        assert_eq!(s.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(s.renew_margin, Duration::from_secs(3600));
        assert_eq!(s.resync_period, Duration::from_secs(10));
        assert_eq!(s.lease_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(s.healthz_addr, None, "port 0 disables the health server");
        assert!(!s.ip_masq);
        assert!(matches!(s.iface, IfaceSpec::DefaultRoute));
    }

    #[test]
    fn endpoints_split_on_commas_and_iface_repeats() {
        let c = parse(&[
            "--etcd-endpoints",
            "http://a:2379,https://b:2379",
            "--iface",
            "eth0",
            "--iface",
            "10.0.0.1",
        ])
        .unwrap();
        assert_eq!(c.etcd_endpoints, vec!["http://a:2379", "https://b:2379"]);
        let s = c.settings().unwrap();
        match s.iface {
            IfaceSpec::Names(n) => assert_eq!(n, vec!["eth0", "10.0.0.1"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn store_path_implies_embedded() {
        let s = parse(&["--store-path", "/tmp/x.json"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(
            s.store,
            StoreSettings::Embedded {
                path: "/tmp/x.json".into()
            }
        );
        let e = parse(&["--store", "embedded"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(e, CliError::EmbeddedWithoutPath);
        assert!(e.to_string().contains("--store-path"));
        let e = parse(&["--store", "etcd", "--store-path", "/x"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(e, CliError::PathWithEtcd);
    }

    #[test]
    fn renew_margin_range_is_enforced_by_clap_naming_the_flag() {
        for bad in ["0", "1440"] {
            let e = parse(&["--subnet-lease-renew-margin", bad]).unwrap_err();
            assert!(e.to_string().contains("--subnet-lease-renew-margin"), "{e}");
        }
        let s = parse(&["--subnet-lease-renew-margin", "1439"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(s.renew_margin, Duration::from_secs(1439 * 60));
    }

    #[test]
    fn pairs_must_come_together() {
        let e = parse(&["--etcd-certfile", "/c"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(e, CliError::HalfClientCert);
        let e = parse(&["--etcd-username", "u"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(e, CliError::HalfAuth);
        let ok = parse(&["--etcd-username", "u", "--etcd-password", "p"])
            .unwrap()
            .settings();
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        let e = parse(&["--etcd-endpoints", "127.0.0.1:2379"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("--etcd-endpoints"), "{e}");
        let e = parse(&["--iface-regex", "eth[0"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("--iface-regex"), "{e}");
        let e = parse(&["--resync-period", "10ms"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("--resync-period"), "{e}");
        let e = parse(&["--lease-ttl", "2s"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert!(e.to_string().contains("--lease-ttl"), "{e}");
        let e = parse(&["--resync-period", "ten"]).unwrap_err();
        assert!(e.to_string().contains("--resync-period"), "{e}");
        // Go accepts both; like Go, --iface comes first.
        let s = parse(&["--iface-can-reach", "1.2.3.4", "--iface", "eth0"])
            .unwrap()
            .settings()
            .unwrap();
        assert!(matches!(s.iface, IfaceSpec::Names(ref n) if n == &["eth0".to_string()]));
        assert!(matches!(s.iface_fallbacks[..], [IfaceSpec::CanReach(_)]));
        let s = parse(&["--iface-regex", "^e", "--iface", "eth0"])
            .unwrap()
            .settings()
            .unwrap();
        assert!(matches!(s.iface, IfaceSpec::Names(_)));
        assert!(matches!(s.iface_fallbacks[..], [IfaceSpec::Regexes(_)]));
    }

    #[test]
    fn healthz_addr_from_ip_and_port_or_one_flag() {
        let s = parse(&["--healthz-port", "8471"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(s.healthz_addr, Some("0.0.0.0:8471".parse().unwrap()));
        let s = parse(&[
            "--healthz-ip",
            "127.0.0.1",
            "--healthz-port",
            "1",
            "--healthz-addr",
            "127.0.0.2:9",
        ])
        .unwrap()
        .settings()
        .unwrap();
        assert_eq!(s.healthz_addr, Some("127.0.0.2:9".parse().unwrap()));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn busy_poll_default_bounds_and_mode_go_to_the_backend() {
        let s = parse(&[]).unwrap().settings().unwrap();
        assert_eq!(s.datapath, crate::backend::NodeOverrides::default());
        assert_eq!(s.datapath.busy_poll, Duration::from_micros(100));
        let s = parse(&["--userspace-busy-poll", "0", "--datapath-mode", "userspace"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(s.datapath.busy_poll, Duration::ZERO);
        assert_eq!(
            s.datapath.mode,
            Some(crate::backend::DatapathMode::Userspace)
        );
        let e = parse(&["--userspace-busy-poll", "1s"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(e, CliError::BusyPollTooLong(Duration::from_secs(1)));
        assert!(e.to_string().contains("use 0 to 10ms"), "{e}");
        assert_eq!(s.datapath.queues, None);
        let s = parse(&["--userspace-queues", "1"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(s.datapath.queues, Some(1));
        for bad in ["0", "5"] {
            let e = parse(&["--userspace-queues", bad])
                .unwrap()
                .settings()
                .unwrap_err();
            assert!(e.to_string().contains("use 1 to 4"), "{e}");
        }
        assert!(parse(&["--userspace-queues", "-1"]).is_err());
    }

    fn kube(args: &[&str], node: Option<&str>) -> Result<Settings, CliError> {
        let mut cli = parse(args).unwrap();
        cli.node_name = node.map(str::to_string);
        cli.settings()
    }

    #[test]
    fn kube_subnet_mgr_selects_kubernetes_mode() {
        let s = kube(&["--kube-subnet-mgr"], Some("node-1")).unwrap();
        assert_eq!(
            s.store,
            StoreSettings::Kube(KubeSettings {
                kubeconfig: None,
                api_url: None,
                node_name: "node-1".into(),
                annotation_prefix: "flannel.alpha.coreos.com/".into(),
                subnet_source: KubeSubnetSource::Node,
                namespace: None,
            })
        );
        assert_eq!(
            s.net_config_path.as_deref(),
            Some(std::path::Path::new(DEFAULT_KUBE_NET_CONF))
        );
        let s = kube(
            &[
                "--store",
                "kube",
                "--kubeconfig-file",
                "/etc/kc",
                "--kube-api-url",
                "https://192.0.2.1:6443",
                "--kube-annotation-prefix",
                "example.com/",
                "--net-config-path",
                "/tmp/nc.json",
            ],
            Some("n2"),
        )
        .unwrap();
        match s.store {
            StoreSettings::Kube(k) => {
                assert_eq!(
                    k.kubeconfig.as_deref(),
                    Some(std::path::Path::new("/etc/kc"))
                );
                assert_eq!(k.api_url.as_deref(), Some("https://192.0.2.1:6443"));
                assert_eq!(k.annotation_prefix, "example.com/");
            }
            other => panic!("expected kube, got {other:?}"),
        }
        assert_eq!(
            s.net_config_path.as_deref(),
            Some(std::path::Path::new("/tmp/nc.json"))
        );
    }

    #[test]
    fn kube_mode_errors_name_the_fix() {
        assert_eq!(
            kube(&["--kube-subnet-mgr"], None).unwrap_err(),
            CliError::NoNodeName
        );
        assert_eq!(
            kube(&["--kube-subnet-mgr"], Some("  ")).unwrap_err(),
            CliError::NoNodeName
        );
        assert_eq!(
            kube(&["--kube-subnet-mgr", "--store", "etcd"], Some("n")).unwrap_err(),
            CliError::KubeAndOtherStore("etcd".into())
        );
        assert_eq!(
            kube(
                &["--kube-subnet-mgr", "--kube-api-url", "192.0.2.1:6443"],
                Some("n")
            )
            .unwrap_err(),
            CliError::BadKubeApiUrl("192.0.2.1:6443".into())
        );
        // Go appends the slash; two slashes Go refuses too.
        match kube(
            &["--kube-subnet-mgr", "--kube-annotation-prefix", "x.io"],
            Some("n"),
        )
        .unwrap()
        .store
        {
            StoreSettings::Kube(k) => assert_eq!(k.annotation_prefix, "x.io/"),
            other => panic!("expected kube, got {other:?}"),
        }
        let e = kube(
            &["--kube-subnet-mgr", "--kube-annotation-prefix", "a/b/c"],
            Some("n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--kube-annotation-prefix"), "{e}");
        // Go's boolean forms.
        let s = kube(&["--kube-subnet-mgr=true", "--ip-masq=false"], Some("n")).unwrap();
        assert!(matches!(s.store, StoreSettings::Kube(_)) && !s.ip_masq);
        let s = kube(&["--kube-subnet-mgr=false", "--ip-masq=true"], Some("n")).unwrap();
        assert!(matches!(s.store, StoreSettings::Etcd(_)) && s.ip_masq);
        assert_eq!(
            kube(&["--kube-subnet-mgr", "--store-path", "/tmp/x"], Some("n")).unwrap_err(),
            CliError::PathWithEtcd
        );
        // Without the flag, NODE_NAME alone changes nothing.
        assert!(matches!(
            kube(&[], Some("n")).unwrap().store,
            StoreSettings::Etcd(_)
        ));
    }

    #[test]
    fn kube_subnet_source_lease_needs_the_namespace_and_kubernetes_mode() {
        let mut cli = parse(&["--kube-subnet-mgr", "--kube-subnet-source", "lease"]).unwrap();
        cli.node_name = Some("n1".into());
        cli.pod_namespace = Some("kube-flannel".into());
        match cli.settings().unwrap().store {
            StoreSettings::Kube(k) => {
                assert_eq!(k.subnet_source, KubeSubnetSource::Lease);
                assert_eq!(k.namespace.as_deref(), Some("kube-flannel"));
            }
            other => panic!("expected kube, got {other:?}"),
        }
        cli.pod_namespace = Some(" ".into());
        // No POD_NAMESPACE and (outside a pod) no service account file.
        if !std::path::Path::new(SERVICE_ACCOUNT_NAMESPACE).exists() {
            assert_eq!(cli.settings().unwrap_err(), CliError::NoNamespace);
        }
        let e = parse(&["--kube-subnet-source", "lease"])
            .unwrap()
            .settings()
            .unwrap_err();
        assert_eq!(e, CliError::SubnetSourceWithoutKube);
        assert!(e.to_string().contains("--kube-subnet-mgr"), "{e}");
        assert!(parse(&["--kube-subnet-source", "podcidr"]).is_err());
    }
}
