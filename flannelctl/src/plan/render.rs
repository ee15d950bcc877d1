//! Turns a `PlanReport` into the operator's text table or JSON.

use super::model::{PlanReport, SideReport};
use std::fmt::Write;

const LABEL: usize = 28;
const COLUMN: usize = 36;

pub fn json(report: &PlanReport) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(report)
}

pub fn text(r: &PlanReport) -> String {
    let mut out = String::new();
    let i = &r.instance;
    let vcpus = r.vcpus.map_or(String::new(), |v| {
        let how = match v.source {
            super::vcpus::VcpuSource::Flag => "",
            super::vcpus::VcpuSource::EstimatedFromSize => " (estimated)",
        };
        format!(", {} vCPUs{how}", v.count)
    });
    // Writing to a String cannot fail; ignore the fmt::Result.
    let _ = writeln!(
        out,
        "Plan: {} nodes x {} ({} ENIs x {} IPv4 each, {:?}{vcpus}), {} pods + {} hostNetwork pods per node",
        r.nodes,
        i.instance_type,
        i.max_enis,
        i.ipv4_per_eni,
        i.hypervisor,
        r.pods_per_node,
        r.host_network_pods
    );
    for side in [&r.vpc_cni, &r.overlay] {
        let _ = writeln!(out, "{}: {}", side.name, side.mode);
    }
    out.push('\n');
    row(&mut out, "", &r.vpc_cni.name, &r.overlay.name);
    row(
        &mut out,
        "",
        &"-".repeat(COLUMN - 2),
        &"-".repeat(COLUMN - 2),
    );
    let both = |f: fn(&SideReport) -> String| (f(&r.vpc_cni), f(&r.overlay));
    let rows: [(&str, (String, String)); 7] = [
        (
            "VPC IPs per node",
            both(|s| s.vpc_ips_per_node.value.to_string()),
        ),
        (
            "VPC IPs for the cluster",
            both(|s| s.cluster_vpc_ips.to_string()),
        ),
        (
            "max pods per node",
            both(|s| s.max_pods_per_node.value.to_string()),
        ),
        (
            "pod IPs per node (max)",
            both(|s| s.pod_ip_capacity_per_node.value.to_string()),
        ),
        ("VPC subnets used", both(used)),
        ("max nodes", both(|s| s.max_nodes.value.to_string())),
        ("fits", both(fits)),
    ];
    for (label, (a, b)) in rows {
        row(&mut out, label, &a, &b);
    }
    let _ = writeln!(
        out,
        "\nVPC IPs saved: {} ({})",
        r.vpc_ips_saved.value, r.vpc_ips_saved.rule
    );
    for side in [&r.vpc_cni, &r.overlay] {
        let _ = writeln!(out, "\n{}, how each number was found:", side.name);
        let mut explain = |label: &str, value: u64, rule: &str| {
            let _ = writeln!(out, "  {label:<LABEL$} {value:>8}  {rule}");
        };
        explain(
            "max pods per node",
            side.max_pods_per_node.value,
            &side.max_pods_per_node.rule,
        );
        explain(
            "pod IPs per node (max)",
            side.pod_ip_capacity_per_node.value,
            &side.pod_ip_capacity_per_node.rule,
        );
        for d in &side.details {
            explain(&d.label, d.value, &d.rule);
        }
        explain(
            "VPC IPs per node",
            side.vpc_ips_per_node.value,
            &side.vpc_ips_per_node.rule,
        );
        explain("max nodes", side.max_nodes.value, &side.max_nodes.rule);
        for p in &side.pools {
            let margin = if p.needed_ips > p.usable_ips {
                format!("{} short", p.needed_ips - p.usable_ips)
            } else {
                format!("{} spare", p.usable_ips - p.needed_ips)
            };
            let _ = writeln!(
                out,
                "  {}: {} IPs needed of {} usable ({}%, {margin}) in {} (each subnet 2^(32-len) - 5)",
                p.name,
                p.needed_ips,
                p.usable_ips,
                p.percent_used,
                p.subnets.join(", ")
            );
        }
        for problem in &side.problems {
            let _ = writeln!(out, "  ! {problem}");
        }
    }
    if !r.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for w in &r.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}

fn row(out: &mut String, label: &str, a: &str, b: &str) {
    let _ = writeln!(out, "{label:<LABEL$}{a:<COLUMN$}{b}");
}

fn used(s: &SideReport) -> String {
    let parts: Vec<String> = s
        .pools
        .iter()
        .map(|p| format!("{}%", p.percent_used))
        .collect();
    if s.pools.len() > 1 {
        let names: Vec<&str> = s
            .pools
            .iter()
            .map(|p| p.name.split(' ').next().unwrap_or(""))
            .collect();
        format!("{} ({})", parts.join(" / "), names.join(" / "))
    } else {
        parts.join(" / ")
    }
}

fn fits(s: &SideReport) -> String {
    if s.fits {
        format!("yes, {} nodes spare", s.node_headroom)
    } else if s.node_headroom < 0 {
        format!("NO, {} nodes too many", -s.node_headroom)
    } else {
        "NO (pods per node)".to_string()
    }
}
