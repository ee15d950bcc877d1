//! One Kubernetes node: containerd, kubelet and kube-proxy inside the node's
//! network namespace and a private mount namespace of its own.
//!
//! The mount namespace makes the node look like a host of its own without
//! touching the real one: the paths kubelet 1.20, containerd and the
//! DaemonSet's hostPath volumes hard-code (/var/lib/kubelet, /etc/cni/net.d,
//! /opt/cni/bin, /run/flannel, ...) are bind mounts of directories in the
//! node's state directory; kubelet's global sysctls (kernel.panic,
//! kernel.panic_on_oops, vm.overcommit_memory) are read from files holding
//! the values it wants, and with --protect-kernel-defaults it checks them
//! instead of writing the host's. The namespace is persistent (a file,
//! like `ip netns`), so every process of the node is started into it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::pki::{node_name, Pki};
use super::KubeError;
use crate::lab::names;
use crate::lab::process::{self, ProcInfo};
use crate::lab::sh;
use crate::lab::state::KubeNodeState;

/// The sandbox ("pause") image kubelet 1.20 expects.
pub const PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";
/// Reference CNI plugins from Debian: loopback is what containerd sets up
/// in every pod, portmap is chained in our conflist, bridge and host-local
/// are there for comparisons.
pub const REFERENCE_PLUGINS: &[&str] = &["loopback", "portmap", "bridge", "host-local"];
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// A bind mount inside the node's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// In the node's state directory.
    pub src: PathBuf,
    /// The path the node's processes see.
    pub dst: PathBuf,
    /// Files are bound over files, directories over directories.
    pub file: bool,
}

/// Directory binds: (subdirectory of the node's state dir, path seen).
const DIR_BINDS: &[(&str, &str)] = &[
    ("kubelet", "/var/lib/kubelet"),
    ("log-pods", "/var/log/pods"),
    ("log-containers", "/var/log/containers"),
    ("run-flannel", "/run/flannel"),
    ("var-lib-cni", "/var/lib/cni"),
    ("cni-net.d", "/etc/cni/net.d"),
    ("cni-bin", "/opt/cni/bin"),
    // containerd's shims put sockets in /run/containerd/s whatever the
    // configured state directory; keep them per node.
    ("run-containerd", "/run/containerd"),
];

/// The values kubelet wants for the global sysctls it would otherwise set.
const SYSCTLS: &[(&str, &str)] = &[
    ("/proc/sys/vm/overcommit_memory", "1"),
    ("/proc/sys/kernel/panic", "10"),
    ("/proc/sys/kernel/panic_on_oops", "1"),
];

/// Every bind mount of a node whose state directory is `dir`.
pub fn binds(dir: &Path) -> Vec<Bind> {
    let mut v: Vec<Bind> = DIR_BINDS
        .iter()
        .map(|(sub, dst)| Bind {
            src: dir.join(sub),
            dst: PathBuf::from(dst),
            file: false,
        })
        .collect();
    for (path, _) in SYSCTLS {
        let leaf = path.trim_start_matches("/proc/sys/").replace('/', ".");
        v.push(Bind {
            src: dir.join("sysctl").join(leaf),
            dst: PathBuf::from(path),
            file: true,
        });
    }
    v
}

/// The subnet.env the DaemonSet's pod writes on this node (its hostPath
/// /run/flannel), as seen from the host.
pub fn subnet_file(dir: &Path) -> PathBuf {
    dir.join("run-flannel").join("subnet.env")
}

/// containerd's log levels (`debug` shows when each CNI ADD begins and
/// ends, which the pod start benchmark reads).
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error"];

pub fn containerd_config(dir: &Path, socket: &Path, log_level: &str) -> String {
    let d = |sub: &str| dir.join(sub).display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[debug]
  level = "{log_level}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # pod network namespaces under the state dir, not the host's /run/netns
  netns_mounts_under_state_dir = true
  # this VM refuses lower OOM scores
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"#,
        root = d("containerd/root"),
        state = d("containerd/state"),
        sock = socket.display(),
    )
}

/// kubelet's --resolv-conf, in the node's directory.
const RESOLV_CONF: &str = "resolv.conf";

pub fn kubelet_argv(
    bin: &Path,
    pki: &Pki,
    k: u32,
    socket: &Path,
    cgroup_root: &str,
    dir: &Path,
) -> Vec<String> {
    let name = node_name(k);
    vec![
        bin.join("kubelet").display().to_string(),
        format!(
            "--kubeconfig={}",
            pki.kubeconfig(&format!("kubelet-{name}")).display()
        ),
        format!("--hostname-override={name}"),
        format!("--node-ip={}", names::node_ip(k)),
        "--container-runtime=remote".into(),
        format!("--container-runtime-endpoint=unix://{}", socket.display()),
        "--runtime-request-timeout=5m".into(),
        "--cgroup-driver=cgroupfs".into(),
        // No QoS hierarchy: every pod directly below --cgroup-root.
        "--cgroups-per-qos=false".into(),
        "--enforce-node-allocatable=".into(),
        format!("--cgroup-root={cgroup_root}"),
        "--fail-swap-on=false".into(),
        "--protect-kernel-defaults=true".into(),
        "--root-dir=/var/lib/kubelet".into(),
        "--volume-plugin-dir=/var/lib/kubelet/volume-plugins".into(),
        format!("--client-ca-file={}", pki.ca().display()),
        "--anonymous-auth=false".into(),
        "--authorization-mode=AlwaysAllow".into(),
        "--read-only-port=0".into(),
        "--cluster-domain=cluster.local".into(),
        format!("--cluster-dns={}", super::dns::DNS_IP),
        // Not the host's resolv.conf: the lab forwards nothing out, and
        // the host's search domains would only slow every lookup down.
        format!("--resolv-conf={}", dir.join(RESOLV_CONF).display()),
        format!("--pod-infra-container-image={PAUSE_IMAGE}"),
        // Images are imported, never pulled: never collect them.
        "--image-gc-high-threshold=100".into(),
        "--image-gc-low-threshold=99".into(),
        "--eviction-hard=memory.available<100Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%".into(),
        "--node-status-update-frequency=4s".into(),
        "--v=2".into(),
    ]
}

pub fn kube_proxy_argv(bin: &Path, pki: &Pki, k: u32, cluster_cidr: &str) -> Vec<String> {
    vec![
        bin.join("kube-proxy").display().to_string(),
        format!("--kubeconfig={}", pki.kubeconfig("kube-proxy").display()),
        format!("--hostname-override={}", node_name(k)),
        format!("--bind-address={}", names::node_ip(k)),
        format!("--cluster-cidr={cluster_cidr}"),
        "--proxy-mode=iptables".into(),
        // 0 = leave as is: the conntrack table size and hash size are
        // global, not per namespace, and belong to the host.
        "--conntrack-max-per-core=0".into(),
        "--conntrack-min=0".into(),
        "--conntrack-tcp-timeout-established=0s".into(),
        "--conntrack-tcp-timeout-close-wait=0s".into(),
        // This VM refuses negative OOM scores.
        "--oom-score-adj=0".into(),
        "--metrics-bind-address=127.0.0.1:10249".into(),
        "--v=1".into(),
    ]
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> KubeError {
    move |source| KubeError::Io { what, source }
}

/// Creates the node's directories and files: bind sources, the CNI
/// directory with the reference plugins, sysctl value files, containerd's
/// config. Returns the mount points it had to create on the host.
pub fn prepare_dirs(dir: &Path, socket: &Path, log_level: &str) -> Result<Vec<PathBuf>, KubeError> {
    let mut created = Vec::new();
    for b in binds(dir) {
        if b.file {
            let parent = b.src.parent().unwrap_or(dir);
            std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        } else {
            std::fs::create_dir_all(&b.src).map_err(io(format!("create {}", b.src.display())))?;
            if !b.dst.exists() {
                // The mount point must exist on the host; it stays empty
                // there and goes again at `lab down`, with every parent
                // made for it (/opt/cni for /opt/cni/bin), deepest first.
                let mut missing = Vec::new();
                let mut p = b.dst.as_path();
                while !p.exists() {
                    missing.push(p.to_path_buf());
                    match p.parent() {
                        Some(parent) => p = parent,
                        None => break,
                    }
                }
                std::fs::create_dir_all(&b.dst)
                    .map_err(io(format!("create mount point {}", b.dst.display())))?;
                created.extend(missing);
            }
        }
    }
    let resolv = dir.join(RESOLV_CONF);
    std::fs::write(
        &resolv,
        "# kubelet --resolv-conf of a lab node: no upstream resolver, no search domains\n",
    )
    .map_err(io(format!("write {}", resolv.display())))?;
    for ((path, value), b) in SYSCTLS.iter().zip(binds(dir).iter().filter(|b| b.file)) {
        debug_assert_eq!(Path::new(path), b.dst);
        std::fs::write(&b.src, format!("{value}\n"))
            .map_err(io(format!("write {}", b.src.display())))?;
    }
    for p in REFERENCE_PLUGINS {
        let from = Path::new(REFERENCE_PLUGIN_DIR).join(p);
        if !from.is_file() {
            return Err(KubeError::Missing(format!(
                "{} (Debian's containernetworking-plugins; scripts/setup.sh installs it)",
                from.display()
            )));
        }
        let to = dir.join("cni-bin").join(p);
        std::fs::copy(&from, &to).map_err(io(format!(
            "copy {} to {}",
            from.display(),
            to.display()
        )))?;
    }
    for sub in ["containerd/root", "containerd/state"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
    }
    let cfg = dir.join("containerd.toml");
    std::fs::write(&cfg, containerd_config(dir, socket, log_level))
        .map_err(io(format!("write {}", cfg.display())))?;
    Ok(created)
}

/// Makes `mnt_dir` a private mount (a mount namespace can only be pinned
/// to a file on a non-shared mount; /run is shared under systemd).
pub fn make_private_dir(mnt_dir: &Path) -> Result<(), KubeError> {
    std::fs::create_dir_all(mnt_dir).map_err(io(format!("create {}", mnt_dir.display())))?;
    let d = mnt_dir.display().to_string();
    sh::run(Command::new("mount").args(["--bind", &d, &d]))?;
    sh::run(Command::new("mount").args(["--make-private", &d]))?;
    Ok(())
}

/// Creates the node's persistent mount and UTS namespaces (a slave of the host's,
/// so the host's later mounts are seen but nothing flows back) and makes
/// its bind mounts inside it.
pub fn make_mount_ns(mount_ns: &Path, dir: &Path, hostname: &str) -> Result<(), KubeError> {
    std::fs::write(mount_ns, b"").map_err(io(format!("create {}", mount_ns.display())))?;
    // A UTS namespace too, with the node's name as hostname: kubelet and
    // hostNetwork pods see it, as on a real node (e2e tests compare a
    // hostNetwork pod's hostname with its node's name).
    let uts = process::uts_file(mount_ns);
    std::fs::write(&uts, b"").map_err(io(format!("create {}", uts.display())))?;
    sh::run(Command::new("unshare").args([
        &format!("--mount={}", mount_ns.display()),
        &format!("--uts={}", uts.display()),
        "--propagation",
        "slave",
        "hostname",
        hostname,
    ]))?;
    for b in binds(dir) {
        sh::run(Command::new("nsenter").args([
            &format!("--mount={}", mount_ns.display()),
            "--",
            "mount",
            "--bind",
            &b.src.display().to_string(),
            &b.dst.display().to_string(),
        ]))?;
    }
    Ok(())
}

pub fn ctr(socket: &Path) -> Command {
    let mut c = Command::new("ctr");
    c.arg(format!("--address={}", socket.display()))
        .args(["--namespace", "k8s.io"]);
    c
}

pub fn start_containerd(
    netns: &str,
    node: &KubeNodeState,
    dir: &Path,
    within: Duration,
) -> Result<ProcInfo, KubeError> {
    let argv = vec![
        "containerd".to_string(),
        "--config".into(),
        dir.join("containerd.toml").display().to_string(),
    ];
    let p = process::spawn_in_node(netns, &node.mount_ns, &argv, &dir.join("containerd.log"))?;
    let deadline = Instant::now() + within;
    loop {
        let out = sh::run(ctr(&node.containerd_socket).arg("version"));
        if out.is_ok() {
            return Ok(p);
        }
        if !p.alive() || Instant::now() >= deadline {
            return Err(KubeError::NotReady {
                what: format!("containerd of {}", node.name),
                secs: within.as_secs(),
                last: out.err().map(|e| e.to_string()).unwrap_or_default(),
                log: p.log.clone(),
                tail: process::log_tail(&p.log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Imports image archives into the node's containerd (CRI namespace
/// k8s.io) and returns the names it then holds.
pub fn import_images(node: &KubeNodeState, archives: &[PathBuf]) -> Result<Vec<String>, KubeError> {
    for a in archives {
        sh::run(ctr(&node.containerd_socket).args(["images", "import", &a.display().to_string()]))?;
    }
    let out = sh::run(ctr(&node.containerd_socket).args(["images", "ls", "-q"]))?;
    Ok(out.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_cover_every_hard_coded_path() {
        let b = binds(Path::new("/s/node1"));
        let dsts: Vec<_> = b.iter().map(|b| b.dst.display().to_string()).collect();
        for p in [
            "/var/lib/kubelet",
            "/etc/cni/net.d",
            "/opt/cni/bin",
            "/run/flannel",
            "/var/lib/cni",
            "/proc/sys/kernel/panic",
        ] {
            assert!(dsts.iter().any(|d| d == p), "{p} not bound: {dsts:?}");
        }
        let panic = b
            .iter()
            .find(|b| b.dst == Path::new("/proc/sys/kernel/panic"))
            .unwrap();
        assert!(panic.file);
        assert_eq!(panic.src, Path::new("/s/node1/sysctl/kernel.panic"));
        assert!(b.iter().all(|b| b.src.starts_with("/s/node1")));
    }

    #[test]
    fn containerd_uses_the_node_paths() {
        let c = containerd_config(
            Path::new("/s/n1"),
            Path::new("/s/n1/containerd.sock"),
            "debug",
        );
        assert!(c.contains("[debug]\n  level = \"debug\""), "{c}");
        assert!(c.contains(r#"root = "/s/n1/containerd/root""#), "{c}");
        assert!(c.contains(r#"address = "/s/n1/containerd.sock""#), "{c}");
        assert!(
            c.contains(r#"sandbox_image = "k8s.gcr.io/pause:3.2""#),
            "{c}"
        );
        assert!(c.contains(r#"conf_dir = "/etc/cni/net.d""#), "{c}");
    }

    #[test]
    fn kubelet_and_kube_proxy_leave_host_settings_alone() {
        let pki = Pki { dir: "/p".into() };
        let k = kubelet_argv(
            Path::new("/k"),
            &pki,
            2,
            Path::new("/s.sock"),
            "/fct-lab-x-node2",
            Path::new("/st/node2"),
        )
        .join(" ");
        assert!(
            k.contains("--cluster-dns=10.96.0.10 --resolv-conf=/st/node2/resolv.conf"),
            "{k}"
        );
        assert!(k.contains("--protect-kernel-defaults=true"), "{k}");
        assert!(
            k.contains("--hostname-override=node2 --node-ip=198.51.100.2"),
            "{k}"
        );
        assert!(k.contains("--cgroup-root=/fct-lab-x-node2"), "{k}");
        assert!(
            k.contains("--kubeconfig=/p/kubelet-node2.kubeconfig"),
            "{k}"
        );
        let p = kube_proxy_argv(Path::new("/k"), &pki, 2, "10.244.0.0/16").join(" ");
        assert!(
            p.contains("--conntrack-max-per-core=0 --conntrack-min=0"),
            "{p}"
        );
        assert!(p.contains("--cluster-cidr=10.244.0.0/16"), "{p}");
    }
}
