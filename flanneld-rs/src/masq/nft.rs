//! The nftables driver: runs `nft -j -f -` (through the `nftables` crate)
//! with the batch from `rules`, so the swap is one kernel transaction, and
//! never touches a table other than its own. It also keeps the forwarding
//! accepts in iptables' FORWARD chain (`forward`), without which an
//! iptables FORWARD drop policy would cut pod traffic.

use std::sync::Arc;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::forward::ForwardAccepts;
use super::rules::{self, TABLE};
use super::{MasqError, Masquerade};

#[derive(Debug, Clone)]
pub struct NftMasq {
    table: String,
    program: String,
    args: Vec<String>,
    forward: Arc<ForwardAccepts>,
}

impl NftMasq {
    /// Our table (`ip flannel-rs`) in the current network namespace.
    pub fn new() -> Self {
        NftMasq {
            table: TABLE.into(),
            program: "nft".into(),
            args: Vec::new(),
            forward: Arc::new(ForwardAccepts::new()),
        }
    }

    /// The same, in the named namespace (`ip netns exec <name> nft`): for
    /// tests and the lab, whose "nodes" are namespaces.
    pub fn in_netns(netns: &str) -> Self {
        NftMasq {
            table: TABLE.into(),
            program: "ip".into(),
            args: vec!["netns".into(), "exec".into(), netns.into(), "nft".into()],
            forward: Arc::new(ForwardAccepts::in_netns(netns)),
        }
    }

    /// Uses another table name (two drivers in one namespace, e.g. tests).
    pub fn with_table(mut self, table: &str) -> Self {
        self.table = table.into();
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn run(&self, set: &nftables::schema::Nftables) -> Result<(), MasqError> {
        nftables::helper::apply_ruleset_with_args(
            set,
            Some(self.program.as_str()),
            self.args.iter().map(String::as_str),
        )
        .map_err(|e| MasqError::Nft {
            table: format!("ip {}", self.table),
            reason: e.to_string(),
        })
    }

    /// Our rules as `(chain, description)` in kernel order, read back with
    /// `nft -j list table` (see `describe_rule` for the format); empty when
    /// the table does not exist.
    pub fn list(&self) -> Result<Vec<(String, String)>, MasqError> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(["-j", "list", "table", "ip", self.table.as_str()]);
        let out = std::process::Command::new(&self.program)
            .args(&args)
            .output()
            .map_err(|e| MasqError::Nft {
                table: format!("ip {}", self.table),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            // "No such file or directory": the table is not there.
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| MasqError::Nft {
            table: format!("ip {}", self.table),
            reason: format!("nft printed invalid JSON: {e}"),
        })?;
        Ok(rules_of(&v))
    }
}

impl Default for NftMasq {
    fn default() -> Self {
        Self::new()
    }
}

impl Masquerade for NftMasq {
    fn apply(&self, cluster_networks: &[Ipv4Net], pod_subnet: Ipv4Net) -> Result<(), MasqError> {
        if cluster_networks.is_empty() {
            return Err(MasqError::NoClusterNetwork);
        }
        let set = rules::ruleset(&self.table, cluster_networks, pod_subnet);
        // The daemon re-applies on every resync: when the kernel already has
        // exactly these rules, leave the table alone (no needless ruleset
        // generation bump); anything missing or extra triggers the swap.
        if self.list()? != planned_rules(&set) {
            self.run(&set)?;
        }
        // Also idempotent, and re-checked at every resync: a FORWARD drop
        // policy set later (Docker starting) is covered within one period.
        self.forward.ensure(cluster_networks)?;
        Ok(())
    }

    fn remove(&self) -> Result<(), MasqError> {
        // Both, even when one fails (no nft binary, say).
        let nft = self.run(&rules::removal(&self.table));
        self.forward.remove()?;
        nft
    }

    fn forward_installed(&self) -> bool {
        self.forward.installed()
    }
}

/// `(chain, description)` of every rule a batch adds, in order.
pub fn planned_rules(set: &nftables::schema::Nftables) -> Vec<(String, String)> {
    let v = serde_json::to_value(set).unwrap_or_default();
    v["nftables"]
        .as_array()
        .map(|cmds| {
            cmds.iter()
                .filter_map(|c| c.get("add")?.get("rule"))
                .map(|r| {
                    (
                        r["chain"].as_str().unwrap_or_default().to_string(),
                        describe_rule(&r["expr"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(chain, description)` of every rule in an `nft -j` listing, in order.
pub fn rules_of(listing: &Value) -> Vec<(String, String)> {
    listing["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("rule"))
                .map(|r| {
                    (
                        r["chain"].as_str().unwrap_or_default().to_string(),
                        describe_rule(&r["expr"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A rule's statements in a compact, stable text form
/// (`saddr==10.244.1.0/24 daddr!=224.0.0.0/4 masquerade(fully-random)`,
/// `mark&16384==16384 return`), the same for what we send and what nft
/// lists back, so tests can compare them.
pub fn describe_rule(expr: &Value) -> String {
    let Some(stmts) = expr.as_array() else {
        return String::new();
    };
    stmts
        .iter()
        .map(describe_stmt)
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_stmt(stmt: &Value) -> String {
    let Some((key, body)) = stmt.as_object().and_then(|o| o.iter().next()) else {
        return stmt.to_string();
    };
    match key.as_str() {
        "match" => format!(
            "{}{}{}",
            describe_expr(&body["left"]),
            body["op"].as_str().unwrap_or("?"),
            describe_expr(&body["right"])
        ),
        "masquerade" => {
            let flags = match &body["flags"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            format!("masquerade({})", flags.join(","))
        }
        other => other.to_string(),
    }
}

fn describe_expr(e: &Value) -> String {
    match e {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            if let Some(p) = o.get("payload") {
                return p["field"].as_str().unwrap_or("?").to_string();
            }
            if let Some(p) = o.get("prefix") {
                return format!("{}/{}", describe_expr(&p["addr"]), p["len"]);
            }
            if let Some(m) = o.get("meta") {
                return m["key"].as_str().unwrap_or("?").to_string();
            }
            if let Some(Value::Array(ops)) = o.get("&") {
                return ops.iter().map(describe_expr).collect::<Vec<_>>().join("&");
            }
            e.to_string()
        }
        other => other.to_string(),
    }
}
