//! Removing a Kubernetes lab leaves nothing behind: kubelets and
//! kube-proxies stopped, every container killed (found through containerd,
//! the node's cgroup root and its mount namespace), containerd and its
//! shims stopped, the node mount namespaces and their private directory
//! unmounted, the cgroups removed, the mount points the lab created on the
//! host removed, and the control plane stopped. Problems are collected as
//! warnings; teardown always goes on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::node;
use crate::lab::names;
use crate::lab::process;
use crate::lab::sh;
use crate::lab::state::{KubeNodeState, KubeState};

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The mount namespace inode of a process (`mnt:[4026531840]`).
fn mnt_ns_of(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    parse_ns_link(&link.to_string_lossy())
}

pub fn parse_ns_link(link: &str) -> Option<u64> {
    link.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// True when a /proc/<pid>/cgroup text puts the process below `root` in
/// any hierarchy (lines `ID:CONTROLLERS:PATH`).
pub fn in_cgroup(cgroup_text: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    cgroup_text.lines().any(|l| {
        l.splitn(3, ':')
            .nth(2)
            .is_some_and(|p| p == root || p.starts_with(&format!("{root}/")))
    })
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids that belong to the node: in its mount namespace (containerd,
/// shims, kubelet) or below its cgroup root (containers, which have mount
/// namespaces of their own).
fn node_pids(n: &KubeNodeState, ns_inode: Option<u64>) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let by_ns = ns_inode.is_some() && mnt_ns_of(pid) == ns_inode;
            by_ns
                || std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|t| in_cgroup(&t, &n.cgroup_root))
        })
        .collect()
}

/// The inode of a pinned namespace file, when it is a namespace (after
/// `unshare --mount=FILE` the file shows the nsfs inode).
fn pinned_inode(file: &Path) -> Option<u64> {
    let md = std::fs::metadata(file).ok()?;
    // An unmounted placeholder is an empty regular file on tmpfs; nsfs
    // files have size 0 too, so tell them apart by the device: nsfs is not
    // the tmpfs of /run.
    let parent = std::fs::metadata(file.parent()?).ok()?;
    (md.dev() != parent.dev()).then_some(md.ino())
}

fn kill_node(n: &KubeNodeState, warnings: &mut Vec<String>) {
    let inode = pinned_inode(&n.mount_ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = node_pids(n, inode);
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            process::signal(*pid, libc::SIGKILL);
        }
        if Instant::now() >= deadline {
            warnings.push(format!(
                "node {}: processes {pids:?} survived SIGKILL for 10 s",
                n.name
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `dir` and everything below it, deepest first (cgroup
/// directories can only be removed with rmdir, and only when empty).
fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// The node's cgroup directories in every hierarchy (v1 controllers under
/// /sys/fs/cgroup/<controller>, or a v2 unified tree).
fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    let rel = root.trim_start_matches('/');
    if rel.is_empty() {
        return vec![];
    }
    let mut v = vec![Path::new(CGROUP_ROOT).join(rel)];
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        for e in entries.flatten() {
            v.push(e.path().join(rel));
        }
    }
    v.into_iter().filter(|p| p.is_dir()).collect()
}

fn umount(path: &Path) -> Result<(), sh::ShError> {
    sh::run(Command::new("umount").arg(path)).map(|_| ())
}

/// Tears down the Kubernetes parts; returns how many processes were
/// stopped. The namespaces, etcd and the state directory are the plain
/// lab teardown's job, after this.
pub fn down(k: &KubeState, state_dir: &Path, warnings: &mut Vec<String>) -> usize {
    let mut stopped = 0;
    // kubelet first, so it does not restart what is being killed.
    for n in &k.nodes {
        for p in [&n.kubelet, &n.kube_proxy].into_iter().flatten() {
            stopped += usize::from(p.alive());
            if let Err(e) = p.stop(Duration::from_secs(5)) {
                warnings.push(e.to_string());
            }
        }
    }
    for n in &k.nodes {
        // Ask containerd to kill its tasks (the CNI DEL of each sandbox
        // runs when the sandbox is removed; the namespaces go anyway).
        if n.containerd.as_ref().is_some_and(|p| p.alive()) {
            if let Ok(out) = sh::run(node::ctr(&n.containerd_socket).args(["tasks", "ls", "-q"])) {
                for id in out.lines().filter(|l| !l.is_empty()) {
                    let _ = sh::run(
                        node::ctr(&n.containerd_socket).args(["tasks", "kill", "-s", "KILL", id]),
                    );
                }
            }
        }
        if let Some(p) = &n.containerd {
            stopped += usize::from(p.alive());
            if let Err(e) = p.stop(Duration::from_secs(5)) {
                warnings.push(e.to_string());
            }
        }
        kill_node(n, warnings);
        for dir in cgroup_dirs(&n.cgroup_root) {
            if let Err(e) = rmdir_tree(&dir) {
                warnings.push(format!("cannot remove cgroup {}: {e}", dir.display()));
            }
        }
        for pinned in [n.mount_ns.clone(), process::uts_file(&n.mount_ns)] {
            if n.mount_ns_made && pinned_inode(&pinned).is_some() {
                if let Err(e) = umount(&pinned) {
                    warnings.push(e.to_string());
                }
            }
        }
    }
    for p in [&k.scheduler, &k.controller_manager, &k.apiserver]
        .into_iter()
        .flatten()
    {
        stopped += usize::from(p.alive());
        if let Err(e) = p.stop(Duration::from_secs(5)) {
            warnings.push(e.to_string());
        }
    }
    if k.mnt_dir_mounted {
        if let Err(e) = umount(&k.mnt_dir) {
            warnings.push(e.to_string());
        }
    }
    release_host_dirs(
        Path::new(names::STATE_ROOT),
        state_dir,
        &k.host_dirs,
        warnings,
    );
    stopped
}

/// The list of host mount points made by Kubernetes labs, shared by all
/// labs: a second lab finds them existing and does not record them, so
/// the last lab to go removes them.
const SHARED_HOST_DIRS: &str = "kube-host-dirs";

/// True when a Kubernetes lab other than the one in `own` has a state
/// directory under `root`.
pub fn other_kube_labs(root: &Path, own: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path() != own && e.file_name().to_string_lossy().starts_with("lab-"))
        .any(|e| {
            std::fs::read_to_string(e.path().join("state.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| !v["kube"].is_null())
        })
}

/// Records mount points a lab created on the host in the shared list.
pub fn record_host_dirs(root: &Path, dirs: &[PathBuf]) -> std::io::Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    let file = root.join(SHARED_HOST_DIRS);
    let mut all: Vec<String> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    for d in dirs {
        let d = d.display().to_string();
        if !all.contains(&d) {
            all.push(d);
        }
    }
    std::fs::write(file, all.join("\n") + "\n")
}

/// Removes the shared mount points (if empty) when no other Kubernetes lab
/// remains: removing a directory that is a mount point in another lab's
/// node mount namespace would detach that mount there.
fn release_host_dirs(root: &Path, own: &Path, mine: &[PathBuf], warnings: &mut Vec<String>) {
    if let Err(e) = record_host_dirs(root, mine) {
        warnings.push(format!("cannot record host directories: {e}"));
    }
    if other_kube_labs(root, own) {
        return;
    }
    let file = root.join(SHARED_HOST_DIRS);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    for d in text.lines().filter(|l| !l.is_empty()) {
        match std::fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "a Kubernetes lab created {d} and it cannot be removed now: {e}"
            )),
        }
    }
    let _ = std::fs::remove_file(file);
}

/// True when a /proc/<pid>/cgroup text puts the process below one of lab
/// `lab`'s node cgroup roots (`/fct-lab-<lab>-node<K>`).
pub fn in_lab_cgroup(cgroup_text: &str, lab: &str) -> bool {
    cgroup_text.lines().any(|l| {
        l.splitn(3, ':')
            .nth(2)
            .and_then(|p| p.trim_start_matches('/').split('/').next())
            .is_some_and(|first| names::is_lab_ns(lab, first) && first.contains("-node"))
    })
}

/// Mount points under `dir` in a mountinfo text, deepest first (field 5 is
/// the mount point; spaces are escaped as \040, which our paths never have).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// The backstop, for a lab whose state file is gone or corrupt (and after
/// [`down`], to catch anything it missed): kills every process below the
/// lab's node cgroup roots, removes those cgroups, and unmounts whatever is
/// still mounted under the state directory (mount namespace files, their
/// private directory), so the directory can be deleted. Finds nothing for
/// a lab without Kubernetes.
pub fn sweep(lab: &str, state_dir: &Path, warnings: &mut Vec<String>) {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = all_pids()
            .into_iter()
            .filter(|&p| p != me)
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                    .is_ok_and(|t| in_lab_cgroup(&t, lab))
            })
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            process::signal(*p, libc::SIGKILL);
        }
        if Instant::now() >= deadline {
            warnings.push(format!("lab {lab}: processes {pids:?} survived SIGKILL"));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut hierarchies = vec![PathBuf::from(CGROUP_ROOT)];
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    for h in hierarchies {
        for e in std::fs::read_dir(&h).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names::is_lab_ns(lab, &name) && name.contains("-node") {
                if let Err(err) = rmdir_tree(&e.path()) {
                    warnings.push(format!(
                        "cannot remove cgroup {}: {err}",
                        e.path().display()
                    ));
                }
            }
        }
    }
    // `lab conformance`'s per-namespace /etc files, if a run was killed.
    let etc = super::conformance::etc_netns_dir(&names::infra_ns(lab));
    if etc.exists() {
        if let Err(e) = std::fs::remove_dir_all(&etc) {
            warnings.push(format!("cannot remove {}: {e}", etc.display()));
        }
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts_under(&info, state_dir) {
        if let Err(e) = umount(&m) {
            warnings.push(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_membership_is_by_path_prefix() {
        let t = "12:pids:/fct-lab-a-node1/abc\n1:name=systemd:/user.slice\n0::/\n";
        assert!(in_cgroup(t, "/fct-lab-a-node1"));
        assert!(!in_cgroup(t, "/fct-lab-a-node"));
        assert!(!in_cgroup("0::/fct-lab-a-node10/x\n", "/fct-lab-a-node1"));
        assert!(in_cgroup("0::/fct-lab-a-node1\n", "/fct-lab-a-node1/"));
    }

    #[test]
    fn lab_cgroups_and_mounts_are_found_by_name() {
        assert!(in_lab_cgroup("4:pids:/fct-lab-a-node2/abc\n", "a"));
        assert!(!in_lab_cgroup("4:pids:/fct-lab-ab-node2/abc\n", "a"));
        assert!(!in_lab_cgroup("0::/user.slice\n", "a"));
        let info = "30 25 0:5 / /run/flannelctl/lab-a/mnt rw shared:1 - tmpfs t rw\n\
                    31 30 0:4 / /run/flannelctl/lab-a/mnt/node1 rw - nsfs nsfs rw\n\
                    32 25 0:6 / /run/other rw - tmpfs t rw\n";
        assert_eq!(
            mounts_under(info, Path::new("/run/flannelctl/lab-a")),
            vec![
                PathBuf::from("/run/flannelctl/lab-a/mnt/node1"),
                PathBuf::from("/run/flannelctl/lab-a/mnt")
            ]
        );
    }

    #[test]
    fn shared_host_dirs_wait_for_the_last_kubernetes_lab() {
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("lab-a");
        let other = root.path().join("lab-b");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("state.json"), r#"{"kube": {"x": 1}}"#).unwrap();
        assert!(other_kube_labs(root.path(), &own));
        let made = root.path().join("opt-cni-bin");
        std::fs::create_dir_all(&made).unwrap();
        let mut w = vec![];
        release_host_dirs(root.path(), &own, std::slice::from_ref(&made), &mut w);
        assert!(made.exists(), "kept while lab b runs");
        std::fs::write(other.join("state.json"), r#"{"kube": null}"#).unwrap();
        release_host_dirs(root.path(), &own, &[], &mut w);
        assert!(!made.exists(), "removed by the last lab");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn namespace_links_parse() {
        assert_eq!(parse_ns_link("mnt:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("net:[4026531840]"), None);
    }

    #[test]
    fn rmdir_tree_removes_nested_directories() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        rmdir_tree(&d.path().join("a")).unwrap();
        assert!(!d.path().join("a").exists());
        rmdir_tree(&d.path().join("gone")).unwrap();
    }
}
