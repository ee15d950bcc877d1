//! `flannelctl lab conformance`: Kubernetes' own end-to-end tests
//! (`e2e.test` of the same 1.20.2 tree as the lab, built by
//! `scripts/k8s-build.sh --e2e`) against a Kubernetes lab. The images the
//! tests name are imported into every node first (built by
//! `deploy/image/build.sh --e2e`), so nothing is pulled. Runs in the infra
//! namespace, outside the cluster network like a real test runner, and
//! prints ginkgo's summary; the JUnit file is written to the report
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{node, KubeError};
use crate::lab::state::LabState;

/// What the e2e framework's pods use, by archive (deploy/image/build.sh
/// --e2e) and the exact name the tests ask for.
pub const E2E_IMAGES: &[(&str, &str)] = &[
    ("agnhost.oci.tar", "k8s.gcr.io/e2e-test-images/agnhost:2.21"),
    ("busybox-e2e.oci.tar", "docker.io/library/busybox:1.29"),
    (
        "jessie-dnsutils.oci.tar",
        "gcr.io/kubernetes-e2e-test-images/jessie-dnsutils:1.0",
    ),
];

pub const DEFAULT_FOCUS: &str = r"\[sig-network\].*\[Conformance\]";

#[derive(Debug, Clone)]
pub struct Options {
    pub focus: String,
    pub skip: String,
    pub report_dir: PathBuf,
}

/// ginkgo's closing counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub ran: u32,
    pub of: u32,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Names of the failed specs (ginkgo's `[Fail]` lines).
    pub failures: Vec<String>,
}

/// Reads ginkgo's summary from its output: `Ran 3 of 5043 Specs in ...`
/// and `3 Passed | 0 Failed | 0 Pending | 5040 Skipped`, plus the
/// `[Fail] ...` lines of the "Summarizing" block.
pub fn parse_summary(out: &str) -> Option<Summary> {
    let mut s = Summary::default();
    let mut seen = false;
    for line in out.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Ran ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            if w.len() >= 3 && w[1] == "of" {
                s.ran = w[0].parse().ok()?;
                s.of = w[2].parse().ok()?;
                seen = true;
            }
        } else if l.contains(" Passed | ") && l.contains(" Failed | ") {
            // `FAIL! -- 2 Passed | 1 Failed | ...`: a count, then its word.
            for part in l.split('|') {
                let w: Vec<&str> = part.split_whitespace().collect();
                let [.., n, what] = w.as_slice() else {
                    continue;
                };
                let n: u32 = n.parse().unwrap_or(0);
                match *what {
                    "Passed" => s.passed = n,
                    "Failed" => s.failed = n,
                    "Skipped" => s.skipped = n,
                    _ => {}
                }
            }
        } else if let Some(rest) = l.strip_prefix("[Fail] ") {
            s.failures.push(rest.to_string());
        }
    }
    seen.then_some(s)
}

/// The Kubernetes source tree next to the binary cache
/// (`<cache>/bin` -> `<cache>/src/kubernetes-<version>`), for
/// `--repo-root` (test manifests), if present.
fn repo_root(bin: &Path) -> Option<PathBuf> {
    let src = bin.parent()?.join("src");
    std::fs::read_dir(src)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("test/e2e").is_dir())
}

/// The `[sig-network] Networking` block asserts internet access in a
/// BeforeEach: the runner GETs http://google.com and fails every spec of
/// the block (the "Granular Checks: Services" among them) when that does
/// not answer 200. It says itself that this is "not really a test of
/// kubernetes". The lab has no route out, and nothing may leave the
/// machine, so for the runner only that name resolves to the infra
/// namespace's own address, where a busybox httpd answers: an
/// `/etc/netns/<infra>/hosts` that `ip netns exec` mounts over /etc/hosts
/// for the runner. Removed again on drop (and by `lab down`).
struct InternetStandIn {
    etc_dir: PathBuf,
    /// /etc/netns did not exist before: remove it again (when empty).
    made_parent: bool,
    server: Option<std::process::Child>,
}

pub const STAND_IN_NAMES: &str = "google.com www.google.com";

impl InternetStandIn {
    fn start(infra: &str, www: &Path) -> Result<Self, KubeError> {
        let io = |what: String| move |source| KubeError::Io { what, source };
        let etc_dir = etc_netns_dir(infra);
        let made_parent = !Path::new(ETC_NETNS).exists();
        std::fs::create_dir_all(&etc_dir).map_err(io(format!("create {}", etc_dir.display())))?;
        let mut guard = InternetStandIn {
            etc_dir: etc_dir.clone(),
            made_parent,
            server: None,
        };
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let infra_ip = crate::lab::names::infra_ip();
        std::fs::write(
            etc_dir.join("hosts"),
            format!("{hosts}\n# flannelctl lab conformance: the runner's internet check stays local\n{infra_ip} {STAND_IN_NAMES}\n"),
        )
        .map_err(io(format!("write {}/hosts", etc_dir.display())))?;
        std::fs::create_dir_all(www).map_err(io(format!("create {}", www.display())))?;
        std::fs::write(
            www.join("index.html"),
            "local stand-in for the e2e internet check\n",
        )
        .map_err(io(format!("write {}/index.html", www.display())))?;
        let child = Command::new("ip")
            .args(["netns", "exec", infra, "busybox", "httpd", "-f"])
            .arg("-p")
            .arg(format!("{infra_ip}:80"))
            .arg("-h")
            .arg(www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("start busybox httpd (Debian's busybox-static)".into()))?;
        guard.server = Some(child);
        Ok(guard)
    }
}

impl Drop for InternetStandIn {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.etc_dir);
        if self.made_parent {
            // Only when empty: another lab's run may be using it.
            let _ = std::fs::remove_dir(ETC_NETNS);
        }
    }
}

const ETC_NETNS: &str = "/etc/netns";

/// Where `ip netns exec` finds per-namespace files to mount over /etc.
pub fn etc_netns_dir(netns: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(netns)
}

pub fn run(st: &LabState, o: &Options) -> Result<Summary, KubeError> {
    let k = st.kube.as_ref().ok_or_else(|| {
        KubeError::Usage(format!(
            "lab {} is not a Kubernetes lab (start it with `lab up --kubernetes`)",
            st.name
        ))
    })?;
    let e2e = k.bin_dir.join("e2e.test");
    if !e2e.is_file() {
        return Err(KubeError::Missing(format!(
            "{} (build it with scripts/k8s-build.sh --e2e)",
            e2e.display()
        )));
    }
    let archives: Vec<PathBuf> = E2E_IMAGES
        .iter()
        .map(|(a, _)| k.image_dir.join(a))
        .collect();
    if let Some(a) = archives.iter().find(|a| !a.is_file()) {
        return Err(KubeError::Missing(format!(
            "{} (build the test images with deploy/image/build.sh --e2e --out {})",
            a.display(),
            k.image_dir.display()
        )));
    }
    for n in &k.nodes {
        let have = node::import_images(n, &archives)?;
        for (_, name) in E2E_IMAGES {
            if !have.iter().any(|h| h == name) {
                return Err(KubeError::ImageMissing {
                    image: name.to_string(),
                    node: n.name.clone(),
                    dir: k.image_dir.clone(),
                });
            }
        }
    }
    std::fs::create_dir_all(&o.report_dir).map_err(|source| KubeError::Io {
        what: format!("create {}", o.report_dir.display()),
        source,
    })?;
    let log = o.report_dir.join("e2e.log");
    let file = std::fs::File::create(&log).map_err(|source| KubeError::Io {
        what: format!("create {}", log.display()),
        source,
    })?;
    let file2 = file.try_clone().map_err(|source| KubeError::Io {
        what: format!("open {}", log.display()),
        source,
    })?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &st.infra_ns])
        .arg(&e2e)
        .arg(format!(
            "--kubeconfig={}",
            k.pki_dir.join("admin.kubeconfig").display()
        ))
        .arg("--provider=skeleton")
        .arg(format!(
            "--kubectl-path={}",
            k.bin_dir.join("kubectl").display()
        ))
        .arg(format!("--report-dir={}", o.report_dir.display()))
        .arg(format!("--num-nodes={}", k.nodes.len()))
        // The lab's cluster DNS (lab/kube/dns.rs) serves this domain.
        .arg("--dns-domain=cluster.local")
        .arg(format!("--ginkgo.focus={}", o.focus))
        .arg("--ginkgo.noColor")
        // Logs of "master and nodes" are gathered over ssh on real
        // providers; the lab's are in its state directory.
        .arg("--disable-log-dump");
    if !o.skip.is_empty() {
        c.arg(format!("--ginkgo.skip={}", o.skip));
    }
    if let Some(root) = repo_root(&k.bin_dir) {
        c.arg(format!("--repo-root={}", root.display()));
    }
    c.stdin(Stdio::null()).stdout(file).stderr(file2);
    let _stand_in = InternetStandIn::start(&st.infra_ns, &o.report_dir.join("www"))?;
    eprintln!(
        "conformance: running e2e.test (focus {:?}, skip {:?}); output in {}",
        o.focus,
        o.skip,
        log.display()
    );
    let status = c.status().map_err(|source| KubeError::Io {
        what: format!("run {}", e2e.display()),
        source,
    })?;
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    parse_summary(&out).ok_or_else(|| {
        KubeError::Usage(format!(
            "e2e.test ended ({status}) without a ginkgo summary; see {}",
            log.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ginkgo_summary_is_read() {
        let out = "stuff\nSummarizing 1 Failure:\n\n[Fail] [sig-network] Services should serve a basic endpoint from pods  [Conformance] \n/go/src/x.go:12\n\nRan 3 of 5043 Specs in 120.1 seconds\nFAIL! -- 2 Passed | 1 Failed | 0 Pending | 5040 Skipped\n";
        let s = parse_summary(out).unwrap();
        assert_eq!(
            (s.ran, s.of, s.passed, s.failed, s.skipped),
            (3, 5043, 2, 1, 5040)
        );
        assert_eq!(s.failures.len(), 1);
        assert!(s.failures[0].starts_with("[sig-network] Services"));
        assert_eq!(parse_summary("no summary"), None);
    }
}
