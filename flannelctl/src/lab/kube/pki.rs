//! The lab cluster's certificates and kubeconfigs, made afresh for every
//! lab with the `openssl` command: a CA, the API server's serving
//! certificate, one client certificate per component (its identity is the
//! certificate's CN and O, as in a kubeadm cluster) and the service-account
//! signing key. P-256 keys: as good as RSA here and generated in
//! milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::super::sh::{self, ShError};
use super::{api_server_url, API_SERVICE_IP};
use crate::lab::names;

/// Certificates are valid this long; a lab is not meant to live longer.
const DAYS: &str = "30";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("openssl failed making the lab's certificates (is Debian's openssl installed?): {0}")]
    Openssl(#[from] ShError),
}

/// One client or serving certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// File stem: `<name>.crt`, `<name>.key`.
    pub name: String,
    /// The subject: CN is the user name, O the group.
    pub cn: String,
    pub org: Option<String>,
    /// `serverAuth` or `clientAuth`.
    pub usage: &'static str,
    /// subjectAltName entries (serving certificates only).
    pub sans: Vec<String>,
}

impl CertSpec {
    fn client(name: &str, cn: &str, org: Option<&str>) -> Self {
        CertSpec {
            name: name.into(),
            cn: cn.into(),
            org: org.map(str::to_string),
            usage: "clientAuth",
            sans: vec![],
        }
    }

    pub fn subject(&self) -> String {
        match &self.org {
            Some(o) => format!("/O={o}/CN={}", self.cn),
            None => format!("/CN={}", self.cn),
        }
    }

    /// The x509 extensions file for `openssl x509 -extfile`.
    pub fn extensions(&self) -> String {
        let mut s = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={}\n",
            self.usage
        );
        if !self.sans.is_empty() {
            s.push_str(&format!("subjectAltName={}\n", self.sans.join(",")));
        }
        s
    }
}

/// The node name kubelet registers for node `k`.
pub fn node_name(k: u32) -> String {
    format!("node{k}")
}

/// Every certificate a lab of `nodes` nodes needs.
pub fn cert_specs(nodes: u32) -> Vec<CertSpec> {
    let mut v = vec![
        CertSpec {
            name: "apiserver".into(),
            cn: "kube-apiserver".into(),
            org: None,
            usage: "serverAuth",
            // Reached at the infra address from the nodes, at the first
            // service IP from pods (in-cluster config) and on loopback by
            // the controller manager and scheduler.
            sans: vec![
                format!("IP:{}", names::infra_ip()),
                format!("IP:{API_SERVICE_IP}"),
                "IP:127.0.0.1".into(),
                "DNS:localhost".into(),
                "DNS:kubernetes".into(),
                "DNS:kubernetes.default".into(),
                "DNS:kubernetes.default.svc".into(),
                "DNS:kubernetes.default.svc.cluster.local".into(),
            ],
        },
        // Cluster admin, for the operator and the tests only.
        CertSpec::client("admin", "flannel-rs-lab-admin", Some("system:masters")),
        // The API server's identity towards kubelets (exec, logs).
        CertSpec::client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        ),
        CertSpec::client("controller-manager", "system:kube-controller-manager", None),
        CertSpec::client("scheduler", "system:kube-scheduler", None),
        // Bound to system:node-proxier by the default RBAC policy.
        CertSpec::client("kube-proxy", "system:kube-proxy", None),
    ];
    for k in 1..=nodes {
        // The Node authorizer and NodeRestriction key on this identity.
        v.push(CertSpec::client(
            &format!("kubelet-{}", node_name(k)),
            &format!("system:node:{}", node_name(k)),
            Some("system:nodes"),
        ));
    }
    v
}

/// A kubeconfig with file references (everything runs on this machine).
/// JSON is valid YAML, and serde quotes every path correctly.
pub fn kubeconfig(server: &str, ca: &Path, user: &str, cert: &Path, key: &Path) -> String {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
        "current-context": "lab",
    });
    // A json! value of strings always serializes.
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The files of a generated PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn crt(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.kubeconfig"))
    }
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}

fn openssl(args: &[&str]) -> Result<(), ShError> {
    sh::run(Command::new("openssl").args(args)).map(|_| ())
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn genkey(path: &Path) -> Result<(), ShError> {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &path.display().to_string(),
    ])
}

/// Generates the CA, every certificate of [`cert_specs`], the
/// service-account key pair and one kubeconfig per client certificate in
/// `dir` (created). The kubeconfigs of the controller manager and
/// scheduler point at loopback: they run beside the API server.
pub fn generate(dir: &Path, nodes: u32) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let pki = Pki {
        dir: dir.to_path_buf(),
    };
    let d = |p: PathBuf| p.display().to_string();
    let ca_key = pki.key("ca");
    genkey(&ca_key)?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &d(ca_key.clone()),
        "-subj",
        "/CN=flannel-rs-lab-ca",
        "-days",
        DAYS,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        &d(pki.ca()),
    ])?;
    genkey(&pki.sa_key())?;
    openssl(&[
        "pkey",
        "-in",
        &d(pki.sa_key()),
        "-pubout",
        "-out",
        &d(pki.sa_pub()),
    ])?;
    for (i, spec) in cert_specs(nodes).iter().enumerate() {
        let key = pki.key(&spec.name);
        let csr = dir.join(format!("{}.csr", spec.name));
        let ext = dir.join(format!("{}.ext", spec.name));
        genkey(&key)?;
        openssl(&[
            "req",
            "-new",
            "-key",
            &d(key.clone()),
            "-subj",
            &spec.subject(),
            "-out",
            &d(csr.clone()),
        ])?;
        write(&ext, &spec.extensions())?;
        // Serials must differ per certificate; a counter is enough for a
        // CA that signs only this lab's certificates.
        let serial = format!("{}", 1000 + i);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &d(csr),
            "-CA",
            &d(pki.ca()),
            "-CAkey",
            &d(ca_key.clone()),
            "-set_serial",
            &serial,
            "-days",
            DAYS,
            "-extfile",
            &d(ext),
            "-out",
            &d(pki.crt(&spec.name)),
        ])?;
        if spec.usage == "clientAuth" {
            let server = match spec.name.as_str() {
                "controller-manager" | "scheduler" => "https://127.0.0.1:6443".to_string(),
                _ => api_server_url(),
            };
            let text = kubeconfig(
                &server,
                &pki.ca(),
                &spec.cn,
                &pki.crt(&spec.name),
                &pki.key(&spec.name),
            );
            write(&pki.kubeconfig(&spec.name), &text)?;
        }
    }
    Ok(pki)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_follow_kubernetes_conventions() {
        let specs = cert_specs(2);
        let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap().clone();
        assert_eq!(
            by("kubelet-node2").subject(),
            "/O=system:nodes/CN=system:node:node2"
        );
        assert_eq!(by("kube-proxy").subject(), "/CN=system:kube-proxy");
        assert_eq!(by("admin").org.as_deref(), Some("system:masters"));
        let api = by("apiserver");
        assert_eq!(api.usage, "serverAuth");
        let ext = api.extensions();
        assert!(
            ext.contains("IP:198.51.100.254") && ext.contains("IP:10.96.0.1"),
            "{ext}"
        );
        assert!(ext.contains("extendedKeyUsage=serverAuth"), "{ext}");
        assert!(!by("admin").extensions().contains("subjectAltName"));
        assert_eq!(specs.len(), 6 + 2);
    }

    #[test]
    fn kubeconfig_is_valid_json_with_the_paths() {
        let text = kubeconfig(
            "https://198.51.100.254:6443",
            Path::new("/p/ca.crt"),
            "admin",
            Path::new("/p/a b.crt"),
            Path::new("/p/a.key"),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://198.51.100.254:6443"
        );
        assert_eq!(v["users"][0]["user"]["client-certificate"], "/p/a b.crt");
        assert_eq!(v["current-context"], "lab");
    }
}
