//! `flannelctl leases list|reserve|release`: the operator's view of the
//! lease table of any store (etcd, the embedded file, Kubernetes Node
//! podCIDRs, Kubernetes Lease objects), through the same `LeaseStore` the
//! daemon uses. `release` frees a lease or removes a reservation
//! (`LeaseStore::unreserve`). The table formatting and the choice of entry
//! are pure and unit-tested; the commands run against the embedded store,
//! a real etcd and the fake API server (tests/leases_cli.rs) and against
//! the real API server (tests/tests/kube_leases.rs).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};
use lease_store::kube::{ClientSource, KubeLeaseOptions, KubeLeaseStore, KubeOptions, KubeStore};
use lease_store::{Lease, LeaseAttrs, LeaseStore, NetworkConfig, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LeasesError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// etcd v3, flannel's layout.
    Etcd,
    /// The embedded single-host file (`--store-path`).
    Embedded,
    /// Kubernetes, subnets from Node podCIDRs (read-only here).
    KubeNode,
    /// Kubernetes, subnets in Lease objects (`--kube-subnet-source lease`).
    KubeLease,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Which store holds the table.
    #[arg(long, value_enum, default_value = "etcd")]
    store: StoreKind,
    /// etcd endpoints, comma separated.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// etcd key prefix (flannel's).
    #[arg(long, default_value = "/coreos.com/network")]
    etcd_prefix: String,
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    /// The embedded store's file.
    #[arg(long)]
    store_path: Option<PathBuf>,
    /// Kubeconfig (default: in-cluster, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// API server URL (overrides the kubeconfig's).
    #[arg(long)]
    kube_api_url: Option<String>,
    /// The namespace of the Lease objects (the DaemonSet's).
    #[arg(long, default_value = "kube-flannel-rs")]
    namespace: String,
    /// net-conf.json (Kubernetes stores: the ConfigMap's; needed to check
    /// a reservation against Network).
    #[arg(long)]
    net_config_path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LeasesArgs {
    #[command(subcommand)]
    command: LeasesCommand,
}

#[derive(Debug, Subcommand)]
enum LeasesCommand {
    /// Every lease and reservation: subnet, node address, backend, expiry.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Reserves a subnet for the node with `--public-ip` (no expiry; that
    /// node takes it as its lease, no other node gets it).
    Reserve {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        subnet: Option<Ipv4Net>,
        #[arg(long)]
        ipv6_subnet: Option<Ipv6Net>,
        /// The public IP of the node the subnet is for.
        #[arg(long)]
        public_ip: Ipv4Addr,
    },
    /// Frees the lease or removes the reservation on a subnet. A node's
    /// daemon that still runs takes the same subnet back (as an ordinary
    /// lease, with a TTL): stop the node first to free the subnet for
    /// good.
    Release {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        subnet: Option<Ipv4Net>,
        #[arg(long)]
        ipv6_subnet: Option<Ipv6Net>,
    },
}

fn read(path: &PathBuf) -> Result<String, LeasesError> {
    std::fs::read_to_string(path).map_err(|source| LeasesError::Read {
        path: path.clone(),
        source,
    })
}

/// The Kubernetes stores take their config from a file. Listing and
/// releasing never consult it (the stores list every object whatever its
/// subnet), so a valid stand-in is used when none is given; it must pass
/// the same validation as an operator's file.
const STAND_IN_NET_CONF: &str = r#"{"Network":"10.0.0.0/8","SubnetLen":24}"#;

fn kube_net_conf(a: &StoreArgs, needed_for: Option<&str>) -> Result<NetworkConfig, LeasesError> {
    match (&a.net_config_path, needed_for) {
        (Some(p), _) => Ok(NetworkConfig::parse(&read(p)?).map_err(StoreError::from)?),
        (None, Some(what)) => Err(LeasesError::Usage(format!(
            "{what} with a Kubernetes store needs --net-config-path (the net-conf.json of the kube-flannel-rs ConfigMap)"
        ))),
        (None, None) => Ok(NetworkConfig::parse(STAND_IN_NET_CONF).map_err(StoreError::from)?),
    }
}

async fn open(a: &StoreArgs, needed_for: Option<&str>) -> Result<Arc<dyn LeaseStore>, LeasesError> {
    Ok(match a.store {
        StoreKind::Etcd => {
            let opts = lease_store::etcd::EtcdOptions {
                prefix: a.etcd_prefix.clone(),
                ca_file: a.etcd_cafile.clone(),
                cert_file: a.etcd_certfile.clone(),
                key_file: a.etcd_keyfile.clone(),
                ..lease_store::etcd::EtcdOptions::with_endpoints(a.etcd_endpoints.clone())
            };
            let s = lease_store::etcd::EtcdStore::connect(opts)
                .await
                .map_err(|e| {
                    LeasesError::Usage(format!("etcd {}: {e}", a.etcd_endpoints.join(",")))
                })?;
            Arc::new(s)
        }
        StoreKind::Embedded => {
            let path = a
                .store_path
                .as_ref()
                .ok_or_else(|| LeasesError::Usage("--store embedded needs --store-path".into()))?;
            Arc::new(
                lease_store::embedded::EmbeddedStore::open(path, Duration::from_secs(24 * 3600))
                    .await?,
            )
        }
        StoreKind::KubeNode | StoreKind::KubeLease => {
            let client = lease_store::kube::client(&ClientSource {
                kubeconfig: a.kubeconfig.clone(),
                api_url: a.kube_api_url.clone(),
            })
            .await?;
            let cfg = kube_net_conf(a, needed_for)?;
            if a.store == StoreKind::KubeNode {
                // The node name only matters for acquiring, which the tool
                // never does.
                Arc::new(KubeStore::new(client, KubeOptions::new("", cfg)))
            } else {
                Arc::new(KubeLeaseStore::new(
                    client,
                    KubeLeaseOptions::new(a.namespace.clone(), cfg),
                ))
            }
        }
    })
}

fn backend_detail(a: &LeaseAttrs) -> String {
    let Some(d) = &a.backend_data else {
        return String::new();
    };
    match d.get("VtepMAC").and_then(|m| m.as_str()) {
        Some(mac) => format!("vtep={mac}"),
        None => d.to_string(),
    }
}

/// What a lease without an expiry is. In the node store every entry is a
/// Node's podCIDR, held for as long as the Node exists: no TTL, yet not an
/// operator's reservation (none can be made or removed there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExpiry {
    Reservation,
    PodCidr,
}

impl NoExpiry {
    fn of(store: StoreKind) -> Self {
        if store == StoreKind::KubeNode {
            NoExpiry::PodCidr
        } else {
            NoExpiry::Reservation
        }
    }

    fn is_reservation(self, l: &Lease) -> bool {
        self == NoExpiry::Reservation && l.is_reservation()
    }
}

/// The table, sorted by subnet; `now` for the time left.
pub fn table(leases: &[Lease], now: SystemTime, no_expiry: NoExpiry) -> String {
    let mut rows: Vec<&Lease> = leases.iter().collect();
    rows.sort_by_key(|l| (l.subnet, l.ipv6_subnet));
    let mut out = format!(
        "{:<20} {:<24} {:<16} {:<10} {:<16} {}\n",
        "SUBNET", "IPV6 SUBNET", "PUBLIC IP", "BACKEND", "EXPIRES IN", "DETAIL"
    );
    for l in rows {
        let expires = match l.expiration {
            None if no_expiry == NoExpiry::PodCidr => "podCIDR".to_string(),
            None => "reserved".to_string(),
            Some(e) => match e.duration_since(now) {
                Ok(d) => format!("{}s", d.as_secs()),
                Err(_) => "expired".to_string(),
            },
        };
        out.push_str(&format!(
            "{:<20} {:<24} {:<16} {:<10} {:<16} {}\n",
            l.subnet.map(|s| s.to_string()).unwrap_or("-".into()),
            l.ipv6_subnet.map(|s| s.to_string()).unwrap_or("-".into()),
            l.attrs.public_ip,
            if l.attrs.backend_type.is_empty() {
                "-"
            } else {
                &l.attrs.backend_type
            },
            expires,
            backend_detail(&l.attrs),
        ));
    }
    out
}

/// One JSON object per lease (its flannel attributes, the subnets and the
/// expiry in unix seconds, null for a reservation).
pub fn json_lines(leases: &[Lease], no_expiry: NoExpiry) -> String {
    leases
        .iter()
        .map(|l| {
            let exp = l.expiration.and_then(|e| {
                e.duration_since(SystemTime::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            });
            serde_json::json!({
                "subnet": l.subnet.map(|s| s.to_string()),
                "ipv6_subnet": l.ipv6_subnet.map(|s| s.to_string()),
                "attrs": serde_json::from_str::<serde_json::Value>(&l.attrs.to_json()).unwrap_or_default(),
                "expires": exp,
                "reservation": no_expiry.is_reservation(l),
            })
            .to_string()
                + "\n"
        })
        .collect()
}

fn need_subnet(v4: Option<Ipv4Net>, v6: Option<Ipv6Net>) -> Result<(), LeasesError> {
    if v4.is_none() && v6.is_none() {
        return Err(LeasesError::Usage(
            "give --subnet (and/or --ipv6-subnet), e.g. --subnet 10.244.5.0/24".into(),
        ));
    }
    Ok(())
}

/// The one lease or reservation on the given subnet(s): each one given
/// must match (`--subnet` alone finds a dual-stack lease too).
fn the_one(
    leases: &[Lease],
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
) -> Result<&Lease, LeasesError> {
    let wanted = |l: &&Lease| {
        v4.is_none_or(|s| l.subnet == Some(s)) && v6.is_none_or(|s| l.ipv6_subnet == Some(s))
    };
    let found: Vec<&Lease> = leases.iter().filter(wanted).collect();
    let asked = [v4.map(|s| s.to_string()), v6.map(|s| s.to_string())]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + ");
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(LeasesError::Usage(format!(
            "no lease or reservation on {asked} (not found): `flannelctl leases list` shows the table"
        ))),
        many => Err(LeasesError::Usage(format!(
            "{} entries match {asked} ({}): give both --subnet and --ipv6-subnet",
            many.len(),
            many.iter().map(|l| l.key()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

async fn run_async(a: &LeasesArgs) -> Result<ExitCode, LeasesError> {
    match &a.command {
        LeasesCommand::List { store, json } => {
            let s = open(store, None).await?;
            let (leases, _) = s.list().await?;
            let no_expiry = NoExpiry::of(store.store);
            if *json {
                print!("{}", json_lines(&leases, no_expiry));
            } else {
                print!("{}", table(&leases, SystemTime::now(), no_expiry));
            }
        }
        LeasesCommand::Reserve {
            store,
            subnet,
            ipv6_subnet,
            public_ip,
        } => {
            need_subnet(*subnet, *ipv6_subnet)?;
            if store.store == StoreKind::KubeNode {
                return Err(LeasesError::Usage(
                    "--store kube-node has no reservations: the controller manager assigns podCIDRs; use --store kube-lease".into(),
                ));
            }
            let s = open(store, Some("reserve")).await?;
            let attrs = LeaseAttrs {
                public_ip: *public_ip,
                public_ipv6: None,
                backend_type: String::new(),
                backend_data: None,
                backend_v6_data: None,
            };
            let l = match s.reserve(*subnet, *ipv6_subnet, &attrs).await {
                Ok(l) => l,
                Err(StoreError::SubnetTaken { key, holder }) => {
                    return Err(LeasesError::Usage(format!(
                        "cannot reserve {key}: the node {holder} holds it (a lease or its reservation); reserve another subnet, or free this one first: stop or remove that node, then `flannelctl leases release --subnet ...` (`flannelctl leases list` shows the table)"
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            println!("reserved {} for {}", l.key(), public_ip);
        }
        LeasesCommand::Release {
            store,
            subnet,
            ipv6_subnet,
        } => {
            need_subnet(*subnet, *ipv6_subnet)?;
            if store.store == StoreKind::KubeNode {
                return Err(LeasesError::Usage(
                    "--store kube-node: a subnet belongs to its Node object; delete the Node to free it".into(),
                ));
            }
            let s = open(store, None).await?;
            let (leases, _) = s.list().await?;
            let l = the_one(&leases, *subnet, *ipv6_subnet)?;
            if l.is_reservation() {
                let r = s.unreserve(l.subnet, l.ipv6_subnet).await?;
                println!(
                    "removed the reservation {} (for {}); a daemon still running with that public IP keeps the subnet as an ordinary lease",
                    r.key(),
                    r.attrs.public_ip
                );
            } else {
                s.release(l).await?;
                println!(
                    "released {} (was held by {}); a daemon still running there takes it back",
                    l.key(),
                    l.attrs.public_ip
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: &LeasesArgs) -> Result<ExitCode, LeasesError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LeasesError::Runtime)?
        .block_on(run_async(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_net_conf_is_valid() {
        NetworkConfig::parse(STAND_IN_NET_CONF).expect("stand-in net-conf must parse");
    }

    fn lease(sn: &str, ip: u8, exp: Option<u64>) -> Lease {
        Lease {
            subnet: Some(sn.parse().unwrap()),
            ipv6_subnet: None,
            attrs: LeaseAttrs {
                public_ip: Ipv4Addr::new(192, 0, 2, ip),
                public_ipv6: None,
                backend_type: "vxlan".into(),
                backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "0a:58:00:00:00:01"})),
                backend_v6_data: None,
            },
            expiration: exp.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            revision: 1,
        }
    }

    #[test]
    fn the_table_is_sorted_and_says_reserved_and_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let t = table(
            &[
                lease("10.244.9.0/24", 9, Some(1600)),
                lease("10.244.2.0/24", 2, None),
                lease("10.244.3.0/24", 3, Some(900)),
            ],
            now,
            NoExpiry::Reservation,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SUBNET"));
        assert!(lines[1].starts_with("10.244.2.0/24") && lines[1].contains("reserved"));
        assert!(lines[2].contains("expired"), "{t}");
        assert!(lines[3].contains("600s") && lines[3].contains("vtep=0a:58:00:00:00:01"));
        let j = json_lines(&[lease("10.244.2.0/24", 2, None)], NoExpiry::Reservation);
        assert!(j.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(v["reservation"], true);
        assert_eq!(v["attrs"]["PublicIP"], "192.0.2.2");
    }

    // A Node's podCIDR has no expiry either, but it is no reservation:
    // node mode says where the subnet comes from instead.
    #[test]
    fn node_mode_shows_pod_cidrs_not_reservations() {
        let now = SystemTime::UNIX_EPOCH;
        let podcidr = [lease("10.244.2.0/24", 2, None)];
        let t = table(&podcidr, now, NoExpiry::of(StoreKind::KubeNode));
        assert!(
            t.lines()
                .nth(1)
                .is_some_and(|l| l.contains("podCIDR") && !l.contains("reserved")),
            "{t}"
        );
        let j = json_lines(&podcidr, NoExpiry::of(StoreKind::KubeNode));
        let v: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        assert_eq!(v["reservation"], false);
        assert_eq!(NoExpiry::of(StoreKind::KubeLease), NoExpiry::Reservation);
    }

    #[test]
    fn release_finds_exactly_one_entry_and_names_mistakes() {
        let mut dual = lease("10.244.3.0/24", 3, Some(10));
        dual.ipv6_subnet = Some("fd00:10:244:3::/64".parse().unwrap());
        let all = [lease("10.244.2.0/24", 2, None), dual.clone()];
        let v4 = |s: &str| Some(s.parse::<Ipv4Net>().unwrap());
        let got = the_one(&all, v4("10.244.2.0/24"), None).unwrap();
        assert!(got.is_reservation());
        // --subnet alone finds a dual-stack entry; a wrong v6 part does not.
        assert_eq!(the_one(&all, v4("10.244.3.0/24"), None).unwrap(), &dual);
        let e = the_one(
            &all,
            v4("10.244.3.0/24"),
            Some("fd00::/64".parse().unwrap()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not found") && e.contains("10.244.3.0/24 + fd00::/64"),
            "{e}"
        );
        let e = the_one(&all, v4("10.244.9.0/24"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("flannelctl leases list"), "{e}");
        // Two entries on one v4 subnet (a hand-made store): say which.
        let mut twin = dual.clone();
        twin.ipv6_subnet = Some("fd00:10:244:4::/64".parse().unwrap());
        let e = the_one(&[dual, twin], v4("10.244.3.0/24"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 entries") && e.contains("--ipv6-subnet"),
            "{e}"
        );
    }
}
