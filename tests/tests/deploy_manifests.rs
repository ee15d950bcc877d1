//! deploy/: every manifest parses into its typed k8s-openapi object with no
//! unknown field (a typo fails); the ConfigMap holds a valid net-conf.json
//! and the CNI plugin's own conflist; the ClusterRole grants exactly the API
//! calls the daemon makes; the DaemonSet's flags parse with the daemon's own
//! CLI and its probes hit the health server those flags configure; the
//! systemd unit passes `systemd-analyze verify` and its env file sets real
//! flags to valid values. deploy/bench/ (the probe between two nodes)
//! parses the same way and each client Job reaches its own server across
//! two nodes on the intended path. No root needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{CommandFactory, Parser};
use flanneld::cli::{Cli, Settings};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, Probe, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Kubernetes API calls of the daemon in Kubernetes mode, as
/// (API group, resource, verb). The ClusterRole must grant exactly these:
/// when the kube backend starts making another call, add it here and to
/// deploy/kube-flannel-rs.yml together.
const KUBE_API_CALLS: &[(&str, &str, &str)] = &[
    // Its own Node: spec.podCIDRs and the annotations it published before.
    ("", "nodes", "get"),
    // The peers: a snapshot, then changes.
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    // Its own annotations (merge patch) and NetworkUnavailable=False.
    ("", "nodes/status", "patch"),
];

/// The calls of `--kube-subnet-source lease` on Lease objects of its own
/// namespace (lease-store/src/kube/lease_store.rs): the namespaced Role
/// must grant exactly these.
const LEASE_API_CALLS: &[(&str, &str, &str)] = &[
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "list"),
    ("coordination.k8s.io", "leases", "watch"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
    ("coordination.k8s.io", "leases", "delete"),
];

const MANIFEST: &str = "kube-flannel-rs.yml";

fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is <repo>/tests.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// One YAML document of a manifest file.
struct Doc {
    origin: String,
    value: Value,
}

fn yaml_docs(path: &Path) -> Result<Vec<Doc>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading manifest {}", path.display()))?;
    yaml_docs_from_str(&path.display().to_string(), &text)
}

fn yaml_docs_from_str(name: &str, text: &str) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de)
            .with_context(|| format!("{name}: YAML document {i} does not parse"))?;
        // A comment-only preamble before the first `---` is an empty document.
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or("?");
        let obj = value["metadata"]["name"].as_str().unwrap_or("?");
        docs.push(Doc {
            origin: format!("{name}: document {i} ({kind} {obj})"),
            value,
        });
    }
    Ok(docs)
}

fn manifest_files() -> Result<Vec<PathBuf>> {
    let dir = deploy_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no *.yml in {}", dir.display());
    Ok(files)
}

/// Collects every path of `original` that is absent from, or different in,
/// `round_trip`. k8s-openapi's Deserialize skips unknown fields silently,
/// so a field that does not survive deserialize + serialize was unknown
/// (a typo) or of the wrong shape.
fn lost_fields(original: &Value, round_trip: &Value, path: &str, out: &mut Vec<String>) {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => lost_fields(v, w, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path} (was {a}, became {b})")),
    }
}

/// Parses a document as `T` and fails on any field `T` does not know.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> Result<T> {
    let obj: T = serde_json::from_value(doc.value.clone())
        .with_context(|| format!("{}: does not match the typed object", doc.origin))?;
    let back = serde_json::to_value(&obj).context("re-serializing")?;
    let mut lost = Vec::new();
    lost_fields(&doc.value, &back, "", &mut lost);
    ensure!(
        lost.is_empty(),
        "{}: unknown or mistyped fields (a typo?): {}",
        doc.origin,
        lost.join(", ")
    );
    Ok(obj)
}

/// Checks one document by its apiVersion and kind; returns the kind.
fn check_doc(doc: &Doc) -> Result<String> {
    let api = doc.value["apiVersion"].as_str().unwrap_or_default();
    let kind = doc.value["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "Namespace") => typed::<Namespace>(doc).map(drop),
        ("v1", "ServiceAccount") => typed::<ServiceAccount>(doc).map(drop),
        ("v1", "ConfigMap") => typed::<ConfigMap>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<ClusterRole>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<ClusterRoleBinding>(doc).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<Role>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<RoleBinding>(doc).map(drop),
        ("apps/v1", "DaemonSet") => typed::<DaemonSet>(doc).map(drop),
        _ => Err(anyhow!(
            "{}: apiVersion {api:?} kind {kind:?} is not checked: add it to check_doc",
            doc.origin
        )),
    }?;
    Ok(kind.to_string())
}

/// The objects of deploy/kube-flannel-rs.yml, one of each kind.
struct Manifest {
    namespace: Namespace,
    account: ServiceAccount,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    lease_role: Role,
    lease_binding: RoleBinding,
    config: ConfigMap,
    daemonset: DaemonSet,
}

fn put<T>(slot: &mut Option<T>, value: T, doc: &Doc) -> Result<()> {
    ensure!(
        slot.is_none(),
        "{}: a second object of this kind; the tests expect one",
        doc.origin
    );
    *slot = Some(value);
    Ok(())
}

fn load_manifest() -> Result<Manifest> {
    manifest_of(MANIFEST, &yaml_docs(&deploy_dir().join(MANIFEST))?)
}

/// Sorts the documents of one manifest (a file or a rendered overlay,
/// named `what`) into their typed objects.
fn manifest_of(what: &str, docs: &[Doc]) -> Result<Manifest> {
    let (mut ns, mut sa, mut cr, mut crb, mut cm, mut ds) = (None, None, None, None, None, None);
    let (mut lr, mut lrb) = (None, None);
    for doc in docs {
        match check_doc(doc)?.as_str() {
            "Namespace" => put(&mut ns, typed(doc)?, doc)?,
            "ServiceAccount" => put(&mut sa, typed(doc)?, doc)?,
            "ClusterRole" => put(&mut cr, typed(doc)?, doc)?,
            "ClusterRoleBinding" => put(&mut crb, typed(doc)?, doc)?,
            "Role" => put(&mut lr, typed(doc)?, doc)?,
            "RoleBinding" => put(&mut lrb, typed(doc)?, doc)?,
            "ConfigMap" => put(&mut cm, typed(doc)?, doc)?,
            "DaemonSet" => put(&mut ds, typed(doc)?, doc)?,
            other => bail!("{}: unexpected kind {other}", doc.origin),
        }
    }
    let missing = |kind: &str| anyhow!("{what} has no {kind}");
    Ok(Manifest {
        namespace: ns.ok_or_else(|| missing("Namespace"))?,
        account: sa.ok_or_else(|| missing("ServiceAccount"))?,
        role: cr.ok_or_else(|| missing("ClusterRole"))?,
        binding: crb.ok_or_else(|| missing("ClusterRoleBinding"))?,
        lease_role: lr.ok_or_else(|| missing("Role (Lease objects)"))?,
        lease_binding: lrb.ok_or_else(|| missing("RoleBinding (Lease objects)"))?,
        config: cm.ok_or_else(|| missing("ConfigMap"))?,
        daemonset: ds.ok_or_else(|| missing("DaemonSet"))?,
    })
}

fn pod_spec(ds: &DaemonSet) -> Result<&PodSpec> {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| anyhow!("the DaemonSet has no pod template spec"))
}

fn daemon_container(spec: &PodSpec) -> Result<&Container> {
    spec.containers
        .iter()
        .find(|c| {
            c.command
                .as_ref()
                .and_then(|c| c.first())
                .is_some_and(|c| c.ends_with("/flanneld-rs"))
        })
        .ok_or_else(|| anyhow!("no container runs /usr/local/bin/flanneld-rs"))
}

fn config_data<'a>(cm: &'a ConfigMap, key: &str) -> Result<&'a str> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(String::as_str)
        .ok_or_else(|| anyhow!("ConfigMap has no key {key}"))
}

/// Parses container args with the daemon's own CLI and validates them.
/// `node_name` stands in for NODE_NAME, which the pod gets from the
/// downward API (checked in the DaemonSet test) and the CLI reads from the
/// environment, not from a flag.
fn daemon_settings(args: &[String], node_name: &str) -> Result<Settings> {
    let mut argv = vec!["flanneld-rs".to_string()];
    argv.extend(args.iter().cloned());
    let mut cli =
        Cli::try_parse_from(&argv).map_err(|e| anyhow!("flanneld-rs rejects {argv:?}: {e}"))?;
    cli.node_name = Some(node_name.to_string());
    cli.settings()
        .map_err(|e| anyhow!("flanneld-rs rejects {argv:?}: {e}"))
}

/// The port a probe targets, resolving a named port on the container.
fn probe_target(c: &Container, probe: Option<&Probe>, what: &str) -> Result<(String, u16)> {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .ok_or_else(|| anyhow!("{what} probe is not an httpGet"))?;
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| {
                anyhow!("{what} probe names port {name:?}, which the container lacks")
            })?,
    };
    Ok((
        get.path.clone().unwrap_or_default(),
        u16::try_from(port).with_context(|| format!("{what} probe port {port}"))?,
    ))
}

fn named_port(c: &Container, name: &str) -> Result<u16> {
    let p = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .ok_or_else(|| anyhow!("container {} has no port named {name}", c.name))?;
    Ok(u16::try_from(p.container_port)?)
}

/// The host path mounted at exactly `dir` in `c`, if any.
fn host_path_at<'a>(spec: &'a PodSpec, c: &Container, dir: &Path) -> Option<&'a str> {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == dir)?;
    volume(spec, &mount.name)?
        .host_path
        .as_ref()
        .map(|h| h.path.as_str())
}

fn volume<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a Volume> {
    spec.volumes.iter().flatten().find(|v| v.name == name)
}

#[test]
fn every_manifest_is_a_typed_object_without_unknown_fields() -> Result<()> {
    let mut kinds = BTreeSet::new();
    for file in manifest_files()? {
        let docs = yaml_docs(&file)?;
        ensure!(!docs.is_empty(), "{} has no documents", file.display());
        for doc in &docs {
            kinds.insert(check_doc(doc)?);
        }
    }
    let want: BTreeSet<String> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
    ]
    .map(String::from)
    .into();
    ensure!(kinds == want, "kinds in deploy/: {kinds:?}, want {want:?}");
    Ok(())
}

#[test]
fn the_unknown_field_check_catches_typos_and_wrong_types() -> Result<()> {
    // The checker itself: a misspelt field and a string where an integer
    // belongs must both fail, or the test above proves nothing.
    let typo = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\n\
                spec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    \
                spec:\n      hostNetwrok: true\n      containers: [{name: c, image: i}]\n";
    let doc = &yaml_docs_from_str("typo", typo)?[0];
    let err = check_doc(doc).expect_err("hostNetwrok must be reported");
    ensure!(format!("{err:#}").contains("hostNetwrok"), "{err:#}");

    let wrong = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\nautomountServiceAccountToken: \"yes\"\n";
    let doc = &yaml_docs_from_str("wrong", wrong)?[0];
    ensure!(check_doc(doc).is_err(), "a string for a bool must fail");

    let kind = "apiVersion: v1\nkind: Servicce\nmetadata: {name: x}\n";
    let doc = &yaml_docs_from_str("kind", kind)?[0];
    ensure!(check_doc(doc).is_err(), "an unknown kind must fail");
    Ok(())
}

#[test]
fn configmap_holds_a_valid_net_conf_and_the_plugins_conflist() -> Result<()> {
    let m = load_manifest()?;
    let net = lease_store::NetworkConfig::parse(config_data(&m.config, "net-conf.json")?)
        .context("net-conf.json in the ConfigMap")?;
    ensure!(
        net.network.map(|n| n.to_string()).as_deref() == Some("10.244.0.0/16"),
        "Network {:?}: docs and guides say 10.244.0.0/16",
        net.network
    );
    ensure!(net.backend_type == "vxlan", "backend {}", net.backend_type);

    let in_map: Value = serde_json::from_str(config_data(&m.config, "cni-conf.json")?)
        .context("cni-conf.json in the ConfigMap is not JSON")?;
    let path = repo_root().join("cni-plugin/conflist/10-flannel-rs.conflist");
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    ensure!(
        in_map == shipped,
        "the ConfigMap's cni-conf.json differs from {}: copy it over",
        path.display()
    );
    Ok(())
}

#[test]
fn cluster_role_grants_exactly_what_the_daemon_calls() -> Result<()> {
    let m = load_manifest()?;
    let mut granted = BTreeSet::new();
    for rule in m.role.rules.iter().flatten() {
        ensure!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "unexpected resourceNames/nonResourceURLs in {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for res in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    ensure!(
                        [group, res, verb].iter().all(|s| s.as_str() != "*"),
                        "wildcard in {rule:?}"
                    );
                    granted.insert((group.clone(), res.clone(), verb.clone()));
                }
            }
        }
    }
    let needed: BTreeSet<_> = KUBE_API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    let lacking: Vec<_> = needed.difference(&granted).collect();
    ensure!(
        extra.is_empty() && lacking.is_empty(),
        "ClusterRole grants more than the daemon calls: {extra:?}; lacks: {lacking:?}"
    );

    // The binding ties that role to the DaemonSet's own account.
    let ns = m.namespace.metadata.name.as_deref().unwrap_or_default();
    let sa = m.account.metadata.name.as_deref().unwrap_or_default();
    ensure!(m.account.metadata.namespace.as_deref() == Some(ns));
    ensure!(m.binding.role_ref.kind == "ClusterRole");
    ensure!(Some(m.binding.role_ref.name.as_str()) == m.role.metadata.name.as_deref());
    let subjects = m.binding.subjects.as_deref().unwrap_or_default();
    ensure!(
        subjects.len() == 1
            && subjects[0].kind == "ServiceAccount"
            && subjects[0].name == sa
            && subjects[0].namespace.as_deref() == Some(ns),
        "the binding's subject must be exactly ServiceAccount {ns}/{sa}: {subjects:?}"
    );
    ensure!(m.daemonset.metadata.namespace.as_deref() == Some(ns));
    ensure!(m.config.metadata.namespace.as_deref() == Some(ns));
    ensure!(pod_spec(&m.daemonset)?.service_account_name.as_deref() == Some(sa));
    Ok(())
}

/// kube::Api methods on `Api<Node>` and the (resource, verb) each needs.
const API_METHODS: &[(&str, &str, &str)] = &[
    ("get", "nodes", "get"),
    ("get_opt", "nodes", "get"),
    ("get_metadata", "nodes", "get"),
    ("list", "nodes", "list"),
    ("list_metadata", "nodes", "list"),
    ("watch", "nodes", "watch"),
    ("watch_metadata", "nodes", "watch"),
    ("create", "nodes", "create"),
    ("delete", "nodes", "delete"),
    ("delete_collection", "nodes", "deletecollection"),
    ("patch", "nodes", "patch"),
    ("patch_metadata", "nodes", "patch"),
    ("replace", "nodes", "update"),
    ("get_status", "nodes/status", "get"),
    ("patch_status", "nodes/status", "patch"),
    ("replace_status", "nodes/status", "update"),
];

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn kube_api_calls_match_the_code() -> Result<()> {
    // The calls as the source makes them: every `Api<T>` must be Api<Node>,
    // and each `nodes.<method>(` (whitespace ignored, so chained calls
    // count) maps to the permission it needs. Keeps KUBE_API_CALLS honest.
    let mut files = Vec::new();
    for dir in ["lease-store/src/kube", "flanneld-rs/src"] {
        rust_sources(&repo_root().join(dir), &mut files)?;
    }
    let mut called = BTreeSet::new();
    let mut lease_called = BTreeSet::new();
    for file in &files {
        let text: String = std::fs::read_to_string(file)?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for (i, _) in text.match_indices("Api<") {
            let rest = &text[i + 4..];
            ensure!(
                rest.starts_with("Node>") || rest.starts_with("KLease>"),
                "{}: an Api<{}..> besides Api<Node>: add its calls to KUBE_API_CALLS and the ClusterRole",
                file.display(),
                rest.chars().take(20).collect::<String>()
            );
        }
        for (method, res, verb) in API_METHODS {
            if text.contains(&format!("nodes.{method}(")) {
                called.insert(("".to_string(), res.to_string(), verb.to_string()));
            }
        }
        for (method, verb) in [
            ("get", "get"),
            ("list", "list"),
            ("watch", "watch"),
            ("create", "create"),
            ("replace", "update"),
            ("delete", "delete"),
            ("patch", "patch"),
        ] {
            if text.contains(&format!("leases.{method}(")) {
                lease_called.insert((
                    "coordination.k8s.io".to_string(),
                    "leases".to_string(),
                    verb.to_string(),
                ));
            }
        }
        if text.contains("watcher(") {
            called.insert(("".into(), "nodes".into(), "list".into()));
            called.insert(("".into(), "nodes".into(), "watch".into()));
        }
    }
    let listed: BTreeSet<_> = KUBE_API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    ensure!(
        called == listed,
        "the code calls {called:?} but KUBE_API_CALLS lists {listed:?}"
    );
    let lease_listed: BTreeSet<_> = LEASE_API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    ensure!(
        lease_called == lease_listed,
        "the code calls {lease_called:?} on Leases but LEASE_API_CALLS lists {lease_listed:?}"
    );
    Ok(())
}

#[test]
fn lease_role_grants_exactly_the_lease_calls_in_the_daemons_namespace_only() -> Result<()> {
    let m = load_manifest()?;
    let ns = m.namespace.metadata.name.as_deref().unwrap_or_default();
    let sa = m.account.metadata.name.as_deref().unwrap_or_default();
    ensure!(
        m.lease_role.metadata.namespace.as_deref() == Some(ns),
        "the Lease Role must be namespaced to {ns}"
    );
    let mut granted = BTreeSet::new();
    for rule in m.lease_role.rules.iter().flatten() {
        ensure!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "unexpected resourceNames/nonResourceURLs in {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for res in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), res.clone(), verb.clone()));
                }
            }
        }
    }
    let needed: BTreeSet<_> = LEASE_API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    ensure!(
        granted == needed,
        "Lease Role grants {granted:?}, the code needs {needed:?}"
    );
    let b = &m.lease_binding;
    ensure!(b.metadata.namespace.as_deref() == Some(ns));
    ensure!(
        b.role_ref.kind == "Role"
            && Some(b.role_ref.name.as_str()) == m.lease_role.metadata.name.as_deref()
    );
    let subjects = b.subjects.as_deref().unwrap_or_default();
    ensure!(
        subjects.len() == 1
            && subjects[0].kind == "ServiceAccount"
            && subjects[0].name == sa
            && subjects[0].namespace.as_deref() == Some(ns),
        "the Lease RoleBinding's subject must be exactly ServiceAccount {ns}/{sa}: {subjects:?}"
    );
    // The daemon finds that namespace through POD_NAMESPACE.
    let c = daemon_container(pod_spec(&m.daemonset)?)?;
    let env = c.env.iter().flatten().find(|e| e.name == "POD_NAMESPACE");
    let field = env
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    ensure!(
        field == Some("metadata.namespace"),
        "POD_NAMESPACE must come from metadata.namespace: {env:?}"
    );
    Ok(())
}

#[test]
fn daemonset_is_unprivileged_bounded_and_runs_on_every_node() -> Result<()> {
    let m = load_manifest()?;
    let spec = pod_spec(&m.daemonset)?;
    ensure!(spec.host_network == Some(true), "hostNetwork must be true");
    ensure!(
        spec.tolerations.iter().flatten().any(|t| t.key.is_none()
            && t.operator.as_deref() == Some("Exists")
            && t.effect.is_none()),
        "needs a toleration of every taint: NotReady nodes need the network to become Ready"
    );

    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in all {
        let res = c
            .resources
            .as_ref()
            .ok_or_else(|| anyhow!("container {} has no resources", c.name))?;
        for (what, map) in [("requests", &res.requests), ("limits", &res.limits)] {
            let map = map
                .as_ref()
                .ok_or_else(|| anyhow!("{}: no {what}", c.name))?;
            ensure!(
                map.contains_key("cpu") && map.contains_key("memory"),
                "{}: {what} need cpu and memory: {map:?}",
                c.name
            );
        }
        let sc = c.security_context.as_ref();
        ensure!(
            sc.and_then(|s| s.privileged) != Some(true),
            "{} is privileged",
            c.name
        );
        ensure!(
            sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
            "{}: set allowPrivilegeEscalation: false",
            c.name
        );
        for mount in c.volume_mounts.iter().flatten() {
            ensure!(
                volume(spec, &mount.name).is_some(),
                "{} mounts unknown volume {}",
                c.name,
                mount.name
            );
        }
    }

    let daemon = daemon_container(spec)?;
    let caps = daemon
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .ok_or_else(|| anyhow!("the daemon container sets no capabilities"))?;
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    ensure!(
        added == BTreeSet::from(["NET_ADMIN", "NET_RAW"]),
        "capabilities: {added:?}"
    );
    ensure!(caps.drop.as_deref() == Some(&["ALL".to_string()][..]));

    let node_name = daemon
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    ensure!(
        node_name == Some("spec.nodeName"),
        "NODE_NAME must come from spec.nodeName"
    );

    // The init containers put the plugin and the conflist where kubelet
    // looks, on the host.
    let inits: Vec<&Container> = spec.init_containers.iter().flatten().collect();
    for (host_dir, needle) in [
        ("/opt/cni/bin", "/opt/cni/bin/flannel-rs"),
        ("/etc/cni/net.d", "/etc/cni/net.d/10-flannel-rs.conflist"),
    ] {
        let found = inits.iter().any(|c| {
            host_path_at(spec, c, Path::new(host_dir)) == Some(host_dir)
                && c.command.iter().flatten().any(|a| a.contains(needle))
        });
        ensure!(
            found,
            "no init container writes {needle} to host {host_dir}"
        );
    }
    Ok(())
}

#[test]
fn daemonset_flags_are_real_and_probes_hit_the_health_server() -> Result<()> {
    let m = load_manifest()?;
    let spec = pod_spec(&m.daemonset)?;
    let daemon = daemon_container(spec)?;
    let args = daemon.args.clone().unwrap_or_default();
    let settings = daemon_settings(&args, "node-a")?;
    ensure!(
        matches!(settings.store, flanneld::cli::StoreSettings::Kube(_)),
        "the DaemonSet must run Kubernetes mode"
    );

    let health = settings
        .healthz_addr
        .ok_or_else(|| anyhow!("the args leave the health server off: set --healthz-port"))?;
    for (probe, path, what) in [
        (daemon.liveness_probe.as_ref(), "/healthz", "liveness"),
        (daemon.readiness_probe.as_ref(), "/readyz", "readiness"),
    ] {
        let (got_path, port) = probe_target(daemon, probe, what)?;
        ensure!(
            got_path == path,
            "{what} probe path {got_path}, want {path}"
        );
        ensure!(
            port == health.port(),
            "{what} probe port {port}, the daemon listens on {health}"
        );
    }
    // hostNetwork: kubelet probes the node IP, so loopback would not do.
    ensure!(
        health.ip().is_unspecified(),
        "health server on {health}: kubelet cannot reach it"
    );
    let metrics = settings
        .metrics_addr
        .ok_or_else(|| anyhow!("no --metrics-addr"))?;
    ensure!(named_port(daemon, "metrics")? == metrics.port());
    ensure!(named_port(daemon, "healthz")? == health.port());

    // net-conf.json comes from the ConfigMap volume.
    let conf_path = settings.net_config_path.clone().ok_or_else(|| {
        anyhow!("no --net-config-path: kube mode reads net-conf.json from a file")
    })?;
    let dir = conf_path.parent().unwrap_or(Path::new("/"));
    let key = conf_path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    config_data(&m.config, key)?;
    let mount = daemon
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| Path::new(&v.mount_path) == dir)
        .ok_or_else(|| anyhow!("nothing is mounted at {}", dir.display()))?;
    let cm_name = volume(spec, &mount.name)
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.as_str());
    ensure!(cm_name == m.config.metadata.name.as_deref());

    // subnet.env is written where the plugin (on the host) reads it.
    let conflist: Value = serde_json::from_str(config_data(&m.config, "cni-conf.json")?)?;
    let plugin_reads = conflist["plugins"][0]["subnetFile"]
        .as_str()
        .ok_or_else(|| anyhow!("conflist has no subnetFile"))?;
    ensure!(settings.subnet_file == Path::new(plugin_reads));
    let dir = settings.subnet_file.parent().unwrap_or(Path::new("/"));
    ensure!(
        host_path_at(spec, daemon, dir) == dir.to_str(),
        "{} must be the host's {0} (hostPath)",
        dir.display()
    );
    Ok(())
}

/// KEY=VALUE lines of a systemd EnvironmentFile (no quoting used here).
fn env_file(text: &str) -> Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("line {}: not KEY=VALUE: {line}", n + 1))?;
        ensure!(
            !v.contains(['"', '\'', '\\', '$']),
            "line {}: keep values unquoted and literal",
            n + 1
        );
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(vars)
}

#[test]
fn systemd_env_file_sets_real_flags_to_valid_values() -> Result<()> {
    let path = deploy_dir().join("systemd/flanneld-rs.env");
    let vars = env_file(&std::fs::read_to_string(&path)?)?;
    ensure!(vars.contains_key("FLANNELD_ETCD_ENDPOINTS"));
    // Map each variable to its flag through clap's own env names, then let
    // the daemon's parser and validation judge the values.
    let cmd = Cli::command();
    let mut argv = vec!["flanneld-rs".to_string()];
    for (k, v) in &vars {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(k.as_str()))
            .ok_or_else(|| anyhow!("{}: {k} is not a flanneld-rs variable", path.display()))?;
        let long = arg.get_long().unwrap_or_default();
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            ensure!(v == "true" || v == "false", "{k}={v}: use true or false");
            if v == "true" {
                argv.push(format!("--{long}"));
            }
        } else {
            argv.push(format!("--{long}={v}"));
        }
    }
    let cli = Cli::try_parse_from(&argv).map_err(|e| anyhow!("{argv:?}: {e}"))?;
    let s = cli.settings().map_err(|e| anyhow!("{argv:?}: {e}"))?;
    match s.store {
        flanneld::cli::StoreSettings::Etcd(e) => ensure!(
            e.cafile.is_some() && e.certfile.is_some() && e.keyfile.is_some(),
            "the example should show etcd TLS"
        ),
        other => bail!("the example is for etcd mode, got {other:?}"),
    }
    ensure!(s.ip_masq);
    Ok(())
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() -> Result<()> {
    let unit_path = deploy_dir().join("systemd/flanneld-rs.service");
    let unit = std::fs::read_to_string(&unit_path)?;
    ensure!(unit.contains("EnvironmentFile=/etc/flannel-rs/flanneld-rs.env"));
    // verify checks that ExecStart exists: point it at the freshly built
    // daemon; nothing else changes.
    let bin = e2e::bins::cargo_bin("flanneld-rs", "flanneld-rs")?;
    let patched = unit.replace(
        "ExecStart=/usr/local/bin/flanneld-rs",
        &format!("ExecStart={}", bin.display()),
    );
    ensure!(
        patched != unit,
        "the unit has no ExecStart=/usr/local/bin/flanneld-rs"
    );
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("flanneld-rs.service");
    std::fs::write(&copy, patched)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .context("running systemd-analyze (apt-get install systemd)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && !stderr.contains("flanneld-rs.service"),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    Ok(())
}

/// The `[Service]` settings of a unit, in order (repeated keys kept).
fn unit_service_settings(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

/// What `systemd-analyze verify` cannot see: with ProtectSystem=strict,
/// every ReadWritePaths= must exist when the sandbox is set up, or the
/// service fails with 226/NAMESPACE. On a fresh boot /run is empty, so the
/// daemon's /run directory must come from RuntimeDirectory=.
fn unit_sandbox_problems(unit: &str, subnet_file: &Path) -> Vec<String> {
    let settings = unit_service_settings(unit);
    let values = |key: &str| -> Vec<String> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let runtime: Vec<PathBuf> = values("RuntimeDirectory")
        .iter()
        .map(|d| Path::new("/run").join(d))
        .collect();
    let mut problems = Vec::new();
    for p in values("ReadWritePaths") {
        // A leading '-' tells systemd to ignore a missing path.
        if p.starts_with('-') {
            continue;
        }
        let path = Path::new(&p);
        if path.starts_with("/run") && !runtime.iter().any(|r| path.starts_with(r)) {
            problems.push(format!(
                "ReadWritePaths={p} does not exist on a fresh boot (226/NAMESPACE): use RuntimeDirectory="
            ));
        }
    }
    match subnet_file.parent() {
        Some(dir) if runtime.iter().any(|r| r == dir) => {}
        dir => problems.push(format!(
            "subnet.env's directory {dir:?} is not the unit's RuntimeDirectory ({runtime:?})"
        )),
    }
    if values("ExecStartPre").iter().any(|v| v.contains("mkdir")) {
        problems.push(
            "ExecStartPre mkdir runs inside the sandbox, after it failed: use RuntimeDirectory="
                .into(),
        );
    }
    problems
}

#[test]
fn systemd_unit_creates_its_run_directory_before_the_sandbox() -> Result<()> {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/flanneld-rs.service"))?;
    let env = env_file(&std::fs::read_to_string(
        deploy_dir().join("systemd/flanneld-rs.env"),
    )?)?;
    let subnet_file = env
        .get("FLANNELD_SUBNET_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/flannel/subnet.env"));
    let problems = unit_sandbox_problems(&unit, &subnet_file);
    ensure!(problems.is_empty(), "{problems:#?}");
    ensure!(
        unit_service_settings(&unit).contains(&("ProtectSystem".into(), "strict".into())),
        "the unit should keep ProtectSystem=strict"
    );

    // The check itself: the unit as it was before (fails on a fresh boot).
    let old = "[Service]\nExecStartPre=/bin/mkdir -p /run/flannel\nProtectSystem=strict\nReadWritePaths=/run/flannel\n";
    let p = unit_sandbox_problems(old, Path::new("/run/flannel/subnet.env"));
    ensure!(p.len() == 3, "{p:#?}");
    let ok =
        "[Service]\nRuntimeDirectory=flannel\nProtectSystem=strict\nReadWritePaths=-/run/other\n";
    ensure!(unit_sandbox_problems(ok, Path::new("/run/flannel/subnet.env")).is_empty());
    Ok(())
}

#[test]
fn systemd_env_file_detects_or_names_the_al2023_interface() -> Result<()> {
    let text = std::fs::read_to_string(deploy_dir().join("systemd/flanneld-rs.env"))?;
    let vars = env_file(&text)?;
    // Unset means the default route's interface; if set, it must include
    // Amazon Linux 2023's name, or the daemon fails there.
    if let Some(v) = vars.get("FLANNELD_IFACE") {
        ensure!(
            v.split(',').any(|i| i == "ens5"),
            "FLANNELD_IFACE={v} misses ens5 (Amazon Linux 2023)"
        );
    }
    ensure!(
        text.contains("ens5"),
        "the env file should say what AL2023 calls its interface"
    );
    Ok(())
}

// ---- metrics: the IPAM mount, deploy/monitoring ----

#[test]
fn daemon_reads_the_ipam_directory_the_plugin_writes() -> Result<()> {
    let m = load_manifest()?;
    let spec = pod_spec(&m.daemonset)?;
    let daemon = daemon_container(spec)?;
    let settings = daemon_settings(daemon.args.as_deref().unwrap_or_default(), "node-a")?;
    let conflist: Value = serde_json::from_str(config_data(&m.config, "cni-conf.json")?)?;
    let data_dir = conflist["plugins"][0]["dataDir"]
        .as_str()
        .ok_or_else(|| anyhow!("conflist has no dataDir"))?;
    let network = conflist["name"]
        .as_str()
        .ok_or_else(|| anyhow!("conflist has no name"))?;
    // host-local's layout, which the plugin keeps: <dataDir>/<network name>.
    let want = Path::new(data_dir).join(network);
    ensure!(
        settings.ipam_dir.as_deref() == Some(want.as_path()),
        "--ipam-dir {:?} is not where the plugin writes ({})",
        settings.ipam_dir,
        want.display()
    );
    ensure!(
        host_path_at(spec, daemon, Path::new(data_dir)) == Some(data_dir),
        "the daemon container does not mount the host's {data_dir}"
    );
    let mount = daemon
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.mount_path == data_dir)
        .ok_or_else(|| anyhow!("no mount at {data_dir}"))?;
    ensure!(
        mount.read_only == Some(true),
        "mount {data_dir} read-only: the daemon only counts"
    );
    Ok(())
}

const PROMTOOL: &str = "/var/cache/flannel-rs/promtool/promtool";

fn kustomize_dir(dir: &Path) -> Result<Vec<Doc>> {
    let out = Command::new(KUBECTL)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| format!("running {KUBECTL} (build it with scripts/k8s-build.sh)"))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs_from_str(&dir.display().to_string(), &String::from_utf8(out.stdout)?)
}

fn monitoring() -> Result<(Value, Value)> {
    let docs = kustomize_dir(&deploy_dir().join("monitoring"))?;
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d.value["kind"] == kind)
            .map(|d| d.value.clone())
            .ok_or_else(|| anyhow!("deploy/monitoring has no {kind}"))
    };
    Ok((find("PodMonitor")?, find("PrometheusRule")?))
}

#[test]
fn podmonitor_scrapes_the_daemonsets_metrics_port() -> Result<()> {
    let m = load_manifest()?;
    let (pm, rule) = monitoring()?;
    let ns = m.namespace.metadata.name.clone().unwrap_or_default();
    for obj in [&pm, &rule] {
        ensure!(
            obj["apiVersion"] == "monitoring.coreos.com/v1" && obj["metadata"]["namespace"] == ns,
            "{obj}"
        );
    }
    // The selector picks the DaemonSet's pods.
    let pod_labels = m
        .daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|md| md.labels.clone())
        .unwrap_or_default();
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .ok_or_else(|| anyhow!("PodMonitor without matchLabels"))?;
    ensure!(!selector.is_empty());
    for (k, v) in selector {
        ensure!(
            pod_labels.get(k).map(String::as_str) == v.as_str(),
            "PodMonitor selects {k}={v}, the pods have {pod_labels:?}"
        );
    }
    // The port it names is the daemon's metrics port, where --metrics-addr listens.
    let spec = pod_spec(&m.daemonset)?;
    let daemon = daemon_container(spec)?;
    let settings = daemon_settings(daemon.args.as_deref().unwrap_or_default(), "node-a")?;
    let endpoints = pm["spec"]["podMetricsEndpoints"]
        .as_array()
        .ok_or_else(|| anyhow!("no podMetricsEndpoints"))?;
    ensure!(endpoints.len() == 1, "{endpoints:?}");
    let port = endpoints[0]["port"].as_str().unwrap_or_default();
    ensure!(endpoints[0]["path"] == "/metrics");
    ensure!(
        Some(named_port(daemon, port)?) == settings.metrics_addr.map(|a| a.port()),
        "PodMonitor port {port} is not --metrics-addr's"
    );
    // The alerts' job label is what the operator gives a PodMonitor's targets.
    let job = format!(
        "{}/{}",
        ns,
        pm["metadata"]["name"].as_str().unwrap_or_default()
    );
    let text = serde_json::to_string(&rule["spec"])?;
    ensure!(
        text.contains(&format!("job=\\\"{job}\\\"")),
        "alerts should select job=\"{job}\""
    );
    Ok(())
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() -> Result<()> {
    let (_, rule) = monitoring()?;
    let dir = tempfile::tempdir()?;
    let rules = serde_json::json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        dir.path().join("alerts.rules.yaml"),
        serde_norway::to_string(&rules)?,
    )?;
    std::fs::copy(
        deploy_dir().join("monitoring/tests/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )?;
    for args in [
        ["check", "rules", "alerts.rules.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(PROMTOOL)
            .args(args)
            .current_dir(dir.path())
            .output()
            .with_context(|| format!("running {PROMTOOL} (scripts/setup.sh extracts it)"))?;
        ensure!(
            out.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(deploy_dir().join("monitoring/tests/alerts.test.yaml"))?;
    for r in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = r["alert"].as_str().unwrap_or_default();
        ensure!(
            tests.contains(&format!("alertname: {name}\n")),
            "alert {name} has no case in deploy/monitoring/tests/alerts.test.yaml"
        );
    }
    Ok(())
}

#[test]
fn alert_rules_use_only_metrics_the_daemon_exports() -> Result<()> {
    // The daemon's exposition with every operator metric present.
    let metrics = flanneld::daemon::Metrics::new();
    let ipam = tempfile::tempdir()?;
    metrics.ops.set_ipam_dir(Some(ipam.path().to_path_buf()));
    metrics.ops.set_lease(
        Some("10.244.1.0/24".parse()?),
        Some(std::time::SystemTime::now() + std::time::Duration::from_secs(60)),
    );
    metrics.ops.set_peers(1, 0);
    let text = metrics.encode().map_err(|e| anyhow!("{e}"))?;
    let exported: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    // Prometheus naming: one prefix, no unit or _total on the wrong type.
    for name in &exported {
        ensure!(
            (name.starts_with("flanneld_") || name.starts_with("process_"))
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !name.contains("flanneld_flanneld"),
            "metric name {name:?}"
        );
    }
    let (_, rule) = monitoring()?;
    let mut used = BTreeSet::new();
    for r in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let expr = r["expr"].as_str().unwrap_or_default();
        let mut word = String::new();
        for c in expr.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if word.starts_with("flanneld_") || word.starts_with("process_") {
                    used.insert(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
    }
    ensure!(used.len() >= 5, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|u| !exported.contains(*u)).collect();
    ensure!(
        missing.is_empty(),
        "the alerts use {missing:?}, which the daemon does not export (it exports {exported:?})"
    );
    Ok(())
}

// ---- deploy/base + deploy/overlays: kustomize ----

/// The overlays an operator applies (`kubectl apply -k deploy/overlays/X`).
const OVERLAYS: &[&str] = &["eks", "generic"];

/// The kubectl the lab uses (scripts/k8s-build.sh). Its built-in kustomize
/// is v2.0.3: the overlays use only its syntax, which later kustomize
/// releases still accept (some of it with deprecation warnings).
const KUBECTL: &str = "/var/cache/flannel-rs/k8s-1.20.2/bin/kubectl";

/// The image as set in deploy/base/kustomization.yaml.
const IMAGE: &str = "ghcr.io/flannel-rs/flannel-rs:0.1.0";

/// `kubectl kustomize deploy/overlays/<overlay>`, as YAML documents.
fn kustomize(overlay: &str) -> Result<Vec<Doc>> {
    let dir = deploy_dir().join("overlays").join(overlay);
    let out = Command::new(KUBECTL)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .with_context(|| format!("running {KUBECTL} (build it with scripts/k8s-build.sh)"))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {}: {}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("kustomize printed non-UTF-8")?;
    yaml_docs_from_str(&format!("deploy/overlays/{overlay} (rendered)"), &text)
}

/// The node selector term's expressions as (key, operator, values).
fn node_affinity(spec: &PodSpec) -> Result<Vec<(String, String, Vec<String>)>> {
    let terms = &spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .ok_or_else(|| anyhow!("the DaemonSet has no required node affinity"))?
        .node_selector_terms;
    // Terms are ORed: one term keeps the rules from being bypassed by another.
    ensure!(
        terms.len() == 1,
        "expected one node selector term: {terms:?}"
    );
    Ok(terms[0]
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            (
                e.key.clone(),
                e.operator.clone(),
                e.values.clone().unwrap_or_default(),
            )
        })
        .collect())
}

#[test]
fn overlays_are_the_ones_documented_and_render_to_typed_objects() -> Result<()> {
    let dir = deploy_dir().join("overlays");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    ensure!(
        found == OVERLAYS,
        "deploy/overlays holds {found:?}: add new ones to OVERLAYS (and deploy/README.md)"
    );
    for overlay in OVERLAYS {
        let docs = kustomize(overlay)?;
        let m = manifest_of(overlay, &docs)?;
        // Everything in the manifest shares one namespace.
        let ns = m.namespace.metadata.name.as_deref();
        ensure!(ns == Some("kube-flannel-rs"), "{overlay}: namespace {ns:?}");
        for (kind, obj_ns) in [
            ("ServiceAccount", &m.account.metadata.namespace),
            ("ConfigMap", &m.config.metadata.namespace),
            ("DaemonSet", &m.daemonset.metadata.namespace),
        ] {
            ensure!(obj_ns.as_deref() == ns, "{overlay}: {kind} in {obj_ns:?}");
        }
        // The image reference: one image for all three containers, the one
        // the base sets (a container left on the `flannel-rs` placeholder
        // would fail to pull).
        let spec = pod_spec(&m.daemonset)?;
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            ensure!(
                c.image.as_deref() == Some(IMAGE),
                "{overlay}: container {} has image {:?}, not {IMAGE}",
                c.name,
                c.image
            );
        }
        let net = lease_store::NetworkConfig::parse(config_data(&m.config, "net-conf.json")?)
            .with_context(|| format!("{overlay}: net-conf.json"))?;
        flanneld::backend::spec::BackendSpec::parse(&net.backend_type, &net.backend, None)
            .map_err(|e| anyhow!("{overlay}: the daemon rejects net-conf.json's Backend: {e}"))?;
    }
    Ok(())
}

#[test]
fn kube_flannel_rs_yml_is_the_generic_overlay_rendered() -> Result<()> {
    // The lab compiles kube-flannel-rs.yml in and applies it: this is what
    // makes the lab test the generic overlay.
    let file: Vec<Value> = yaml_docs(&deploy_dir().join(MANIFEST))?
        .into_iter()
        .map(|d| d.value)
        .collect();
    let rendered: Vec<Value> = kustomize("generic")?.into_iter().map(|d| d.value).collect();
    ensure!(
        file == rendered,
        "deploy/{MANIFEST} differs from deploy/overlays/generic rendered: run deploy/render.sh"
    );
    Ok(())
}

#[test]
fn the_image_is_named_in_one_place() -> Result<()> {
    // Every file of the kustomize tree: the image's registry path must
    // appear once (deploy/base/kustomization.yaml's `images:`).
    fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                files(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    files(&deploy_dir().join("base"), &mut all)?;
    files(&deploy_dir().join("overlays"), &mut all)?;
    let (name, tag) = IMAGE.rsplit_once(':').context("IMAGE has a tag")?;
    let mut places = Vec::new();
    for f in &all {
        let text = std::fs::read_to_string(f)?;
        for (i, line) in text.lines().enumerate() {
            if line.contains(name) && !line.trim_start().starts_with('#') {
                places.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    ensure!(
        places.len() == 1,
        "the image is named in {places:?}: keep it in deploy/base/kustomization.yaml only"
    );
    let base = std::fs::read_to_string(deploy_dir().join("base/kustomization.yaml"))?;
    ensure!(base.contains(&format!("newName: {name}")) && base.contains(&format!("newTag: {tag}")));
    Ok(())
}

#[test]
fn eks_overlay_keeps_off_fargate_sets_mtu_8951_selects_lease_subnets_and_changes_nothing_else(
) -> Result<()> {
    let generic = kustomize("generic")?;
    let eks = kustomize("eks")?;
    let g = manifest_of("generic", &generic)?;
    let e = manifest_of("eks", &eks)?;

    // Scheduling. Every expression of the term must hold.
    let exprs = node_affinity(pod_spec(&e.daemonset)?)?;
    let has = |key: &str, op: &str, values: &[&str]| {
        exprs.iter().any(|(k, o, v)| {
            k == key && o == op && v.iter().map(String::as_str).eq(values.iter().copied())
        })
    };
    ensure!(has("kubernetes.io/os", "In", &["linux"]), "{exprs:?}");
    // The image holds x86_64 binaries only (deploy/Dockerfile, image/build.sh).
    ensure!(has("kubernetes.io/arch", "In", &["amd64"]), "{exprs:?}");
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile"))?;
    ensure!(
        dockerfile.contains("--target x86_64-unknown-linux-gnu") && !dockerfile.contains("aarch64"),
        "deploy/Dockerfile builds another architecture now: update kubernetes.io/arch in deploy/base/daemonset.yaml"
    );
    ensure!(
        has("eks.amazonaws.com/compute-type", "NotIn", &["fargate", "hybrid", "auto"]),
        "the eks overlay must keep the DaemonSet off Fargate, hybrid and Auto Mode nodes: {exprs:?}"
    );
    let g_exprs = node_affinity(pod_spec(&g.daemonset)?)?;
    ensure!(
        g_exprs.len() + 1 == exprs.len() && g_exprs.iter().all(|x| exprs.contains(x)),
        "the eks overlay should only add the compute-type rule: generic {g_exprs:?}, eks {exprs:?}"
    );

    // net-conf.json: MTU 8951 as the daemon reads it; the rest as generic.
    let e_net = lease_store::NetworkConfig::parse(config_data(&e.config, "net-conf.json")?)?;
    let g_net = lease_store::NetworkConfig::parse(config_data(&g.config, "net-conf.json")?)?;
    match flanneld::backend::spec::BackendSpec::parse(&e_net.backend_type, &e_net.backend, None)
        .map_err(|e| anyhow!("{e}"))?
    {
        flanneld::backend::spec::BackendSpec::Tunnel(t) => {
            ensure!(t.mtu == Some(8951), "eks MTU {:?}", t.mtu);
            ensure!(
                t.port == 8472,
                "the security-group docs say UDP 8472, net-conf says {}",
                t.port
            );
        }
        other => bail!("eks backend {other:?}: the docs describe VXLAN"),
    }
    let mut e_backend = e_net.backend.clone();
    if let Some(o) = e_backend.as_object_mut() {
        o.remove("MTU");
    }
    ensure!(
        e_backend == g_net.backend
            && e_net.network == g_net.network
            && e_net.subnet_len == g_net.subnet_len
            && e_net.enable_nftables == g_net.enable_nftables,
        "the eks net-conf.json differs from the generic one in more than MTU"
    );
    ensure!(
        config_data(&e.config, "cni-conf.json")? == config_data(&g.config, "cni-conf.json")?,
        "the eks overlay changed cni-conf.json"
    );

    // Subnets in Lease objects: EKS assigns no podCIDRs (docs/KUBE-LEASES.md).
    let source = |m: &Manifest| -> Result<Option<String>> {
        Ok(daemon_container(pod_spec(&m.daemonset)?)?
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "FLANNELD_KUBE_SUBNET_SOURCE")
            .and_then(|e| e.value.clone()))
    };
    ensure!(
        source(&e)?.as_deref() == Some("lease"),
        "the eks overlay must select --kube-subnet-source lease"
    );
    ensure!(
        source(&g)?.is_none(),
        "the generic overlay keeps the podCIDR source"
    );

    // Nothing else differs: compare the objects with those two changes undone.
    let undo = |docs: &[Doc]| -> Vec<Value> {
        docs.iter()
            .map(|d| {
                let mut v = d.value.clone();
                if v["kind"] == "ConfigMap" {
                    v["data"]["net-conf.json"] = Value::Null;
                    // A merged generator leaves an empty annotations map.
                    if v["metadata"]["annotations"] == serde_json::json!({}) {
                        v["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("annotations"));
                    }
                }
                if v["kind"] == "DaemonSet" {
                    v["spec"]["template"]["spec"]["affinity"] = Value::Null;
                    let containers = v["spec"]["template"]["spec"]["containers"].as_array_mut();
                    for c in containers.into_iter().flatten() {
                        if let Some(env) = c["env"].as_array_mut() {
                            env.retain(|e| e["name"] != "FLANNELD_KUBE_SUBNET_SOURCE");
                        }
                    }
                }
                v
            })
            .collect()
    };
    ensure!(
        undo(&eks) == undo(&generic),
        "the eks overlay changes more than node affinity, net-conf.json's MTU and the subnet source"
    );
    Ok(())
}

// ---- deploy/bench: flannelctl probe between two nodes ----

/// The objects of deploy/bench/*.yml.
#[derive(Default)]
struct Bench {
    pods: Vec<Pod>,
    services: Vec<Service>,
    jobs: Vec<Job>,
    namespaces: usize,
}

fn load_bench() -> Result<Bench> {
    let dir = deploy_dir().join("bench");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no *.yml in {}", dir.display());
    let mut b = Bench::default();
    for file in files {
        for doc in yaml_docs(&file)? {
            let api = doc.value["apiVersion"].as_str().unwrap_or_default();
            let kind = doc.value["kind"].as_str().unwrap_or_default();
            match (api, kind) {
                ("v1", "Namespace") => {
                    typed::<Namespace>(&doc)?;
                    b.namespaces += 1;
                }
                ("v1", "Pod") => b.pods.push(typed(&doc)?),
                ("v1", "Service") => b.services.push(typed(&doc)?),
                ("batch/v1", "Job") => b.jobs.push(typed(&doc)?),
                _ => bail!(
                    "{}: apiVersion {api:?} kind {kind:?} is not expected in deploy/bench",
                    doc.origin
                ),
            }
        }
    }
    Ok(b)
}

/// The value after `flag` in a command line.
fn flag_value<'a>(cmd: &'a [String], flag: &str) -> Option<&'a str> {
    cmd.iter()
        .position(|a| a == flag)
        .and_then(|i| cmd.get(i + 1))
        .map(String::as_str)
}

fn only_container(spec: &PodSpec, what: &str) -> Result<Container> {
    ensure!(spec.containers.len() == 1, "{what}: expected one container");
    Ok(spec.containers[0].clone())
}

fn hostname_selector(spec: &PodSpec) -> Option<String> {
    spec.node_selector
        .as_ref()?
        .get("kubernetes.io/hostname")
        .cloned()
}

#[test]
fn bench_manifests_are_typed_objects_without_unknown_fields() -> Result<()> {
    let b = load_bench()?;
    ensure!(
        b.namespaces == 1,
        "deploy/bench: one Namespace, got {}",
        b.namespaces
    );
    ensure!(
        (b.pods.len(), b.services.len(), b.jobs.len()) == (2, 2, 2),
        "deploy/bench: two server Pods, two Services, two client Jobs"
    );
    Ok(())
}

#[test]
fn bench_clients_reach_their_own_server_on_another_node() -> Result<()> {
    let b = load_bench()?;
    let m = load_manifest()?;
    let image = daemon_container(pod_spec(&m.daemonset)?)?.image.clone();
    let mut paths = BTreeSet::new();
    for job in &b.jobs {
        let name = job.metadata.name.clone().unwrap_or_default();
        let spec = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .ok_or_else(|| anyhow!("Job {name} has no pod template spec"))?;
        let c = only_container(spec, &name)?;
        ensure!(
            c.image == image,
            "Job {name}: image {:?}, the DaemonSet ships {image:?}",
            c.image
        );
        let cmd = c.command.clone().unwrap_or_default();
        ensure!(
            cmd.len() > 3
                && cmd[0] == "/usr/local/bin/flannelctl"
                && cmd[1..3] == ["probe", "client"],
            "Job {name} does not run `flannelctl probe client`: {cmd:?}"
        );
        ensure!(
            spec.restart_policy.as_deref() == Some("Never"),
            "Job {name}: restartPolicy Never"
        );
        // --server NAME.NAMESPACE.svc.cluster.local:PORT of a headless Service.
        let server =
            flag_value(&cmd, "--server").ok_or_else(|| anyhow!("Job {name}: no --server"))?;
        let (host, port) = server
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("Job {name}: --server {server} has no port"))?;
        let port: i32 = port
            .parse()
            .with_context(|| format!("Job {name}: port of {server}"))?;
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let svc_name = host
            .strip_suffix(&format!(".{ns}.svc.cluster.local"))
            .ok_or_else(|| {
                anyhow!("Job {name}: --server {server} is not a Service of namespace {ns}")
            })?;
        let svc = b
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(svc_name))
            .ok_or_else(|| anyhow!("Job {name}: no Service {svc_name}"))?;
        let sspec = svc
            .spec
            .as_ref()
            .ok_or_else(|| anyhow!("Service {svc_name} has no spec"))?;
        ensure!(
            sspec.cluster_ip.as_deref() == Some("None"),
            "Service {svc_name} must be headless: kube-proxy is not the path we measure"
        );
        let protos: BTreeSet<&str> = sspec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.port == port)
            .filter_map(|p| p.protocol.as_deref())
            .collect();
        ensure!(
            protos == BTreeSet::from(["TCP", "UDP"]),
            "Service {svc_name}: port {port} needs TCP and UDP, has {protos:?}"
        );
        // The Service selects exactly one server Pod, listening on that port.
        let selector = sspec.selector.clone().unwrap_or_default();
        ensure!(!selector.is_empty(), "Service {svc_name} has no selector");
        let servers: Vec<&Pod> = b
            .pods
            .iter()
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        ensure!(
            servers.len() == 1,
            "Service {svc_name} selects {} pods, want 1",
            servers.len()
        );
        let pspec = servers[0]
            .spec
            .as_ref()
            .ok_or_else(|| anyhow!("server pod has no spec"))?;
        let pc = only_container(pspec, svc_name)?;
        ensure!(
            pc.image == image,
            "server of {svc_name}: image {:?}",
            pc.image
        );
        let pcmd = pc.command.clone().unwrap_or_default();
        ensure!(
            pcmd.len() > 3
                && pcmd[0] == "/usr/local/bin/flannelctl"
                && pcmd[1..3] == ["probe", "server"],
            "server of {svc_name} does not run `flannelctl probe server`: {pcmd:?}"
        );
        ensure!(
            flag_value(&pcmd, "--listen") == Some(format!("0.0.0.0:{port}").as_str()),
            "server of {svc_name} must --listen 0.0.0.0:{port}: {pcmd:?}"
        );
        // Same path at both ends, on two different nodes.
        let host_net = spec.host_network == Some(true);
        ensure!(
            host_net == (pspec.host_network == Some(true)),
            "Job {name} and its server must both use hostNetwork or both the pod network"
        );
        if host_net {
            ensure!(
                spec.dns_policy.as_deref() == Some("ClusterFirstWithHostNet"),
                "Job {name}: a hostNetwork pod needs dnsPolicy ClusterFirstWithHostNet to resolve {server}"
            );
        }
        let (a, c_node) = (hostname_selector(pspec), hostname_selector(spec));
        ensure!(
            a.is_some() && c_node.is_some() && a != c_node,
            "Job {name} must run on another node than its server ({a:?} vs {c_node:?})"
        );
        paths.insert(host_net);
    }
    ensure!(
        paths.len() == 2,
        "one overlay (pod network) and one native (hostNetwork) pair"
    );
    Ok(())
}
