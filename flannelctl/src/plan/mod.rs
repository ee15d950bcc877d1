//! `flannelctl plan`: VPC IP budget of the AWS VPC CNI against the overlay.
//!
//! This file is the command: flags, reading the limits table, printing.
//! The arithmetic is in `model`, the table in `limits`, output in `render`.

mod limits;
mod model;
mod render;
mod vcpus;

use clap::{Args, ValueEnum};
use ipnet::Ipv4Net;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read limits file {path}: {source}; check the path or drop --limits-file to use the built-in table")]
    ReadLimits {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the report to stdout: {0}")]
    Stdout(std::io::Error),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Compare the VPC IPs the AWS VPC CNI would hold with an overlay's.
///
/// Rules: shared/docs/VPC-CNI-FACTS.md; usage: docs/PLAN.md.
#[derive(Debug, Args)]
#[command(
    after_help = "Example: flannelctl plan --instance-type m5.large --nodes 50 --pods-per-node 20 \
                  --subnet 10.0.0.0/24 --subnet 10.0.1.0/24"
)]
pub struct PlanArgs {
    /// EC2 instance type of the nodes, e.g. m5.large.
    #[arg(long, short = 't')]
    instance_type: String,
    /// Number of nodes.
    #[arg(long, allow_negative_numbers = true, value_parser = positive)]
    nodes: u32,
    /// Pods per node that are not hostNetwork (each needs a pod IP).
    #[arg(long, allow_negative_numbers = true, value_parser = positive)]
    pods_per_node: u32,
    /// hostNetwork pods per node (aws-node, kube-proxy): count against max pods, need no pod IP.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = count)]
    host_network_pods: u32,
    /// VPC subnet the nodes live in (repeat per subnet/AZ), /16 to /28.
    #[arg(long = "subnet", value_name = "CIDR", required = true, value_parser = subnet)]
    subnets: Vec<Ipv4Net>,
    /// ENIConfig subnet for pod IPs with custom networking (repeatable).
    #[arg(long = "pod-subnet", value_name = "CIDR", value_parser = subnet)]
    pod_subnets: Vec<Ipv4Net>,
    /// A CIDR block of the VPC (repeat for secondary blocks): the cluster
    /// CIDR must not overlap it, and every subnet must lie in one.
    #[arg(long = "vpc-cidr", value_name = "CIDR", value_parser = cidr)]
    vpc_cidrs: Vec<Ipv4Net>,
    /// WARM_ENI_TARGET (default 1).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    warm_eni_target: Option<u32>,
    /// WARM_IP_TARGET (unset by default; turns WARM_ENI_TARGET off).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    warm_ip_target: Option<u32>,
    /// MINIMUM_IP_TARGET (unset by default; turns WARM_ENI_TARGET off).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    minimum_ip_target: Option<u32>,
    /// ENABLE_PREFIX_DELEGATION=true: /28 prefixes instead of secondary IPs.
    #[arg(long)]
    prefix_delegation: bool,
    /// WARM_PREFIX_TARGET (prefix delegation only; default 1 as in the manifest).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    warm_prefix_target: Option<u32>,
    /// AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true: pods on ENIConfig subnets (--pod-subnet).
    #[arg(long)]
    custom_networking: bool,
    /// MAX_ENI: lower the ENI count.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive)]
    max_eni: Option<u32>,
    /// ENABLE_POD_ENI=true (security groups for pods): a trunk ENI takes a slot.
    #[arg(long)]
    pod_eni: bool,
    /// Pods per node with their own security groups (branch ENIs); needs --pod-eni.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = count)]
    sg_pods_per_node: u32,
    /// kubelet --max-pods of the nodes, instead of the formula.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive)]
    max_pods: Option<u32>,
    /// vCPUs of the instance type (for the prefix-delegation cap 110/250); estimated from the size if omitted.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive)]
    vcpus: Option<u32>,
    /// Overlay: the cluster (pod) CIDR, flannel's Network.
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16", value_parser = cidr)]
    cluster_cidr: Ipv4Net,
    /// Overlay: prefix length of each node's subnet, flannel's SubnetLen [default: 24, or prefix + 2 for a cluster CIDR longer than /22].
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(1..=32))]
    node_subnet_len: Option<u8>,
    /// Use this limits CSV instead of the built-in one (same columns as flannelctl/data/aws-eni-limits.csv).
    #[arg(long, value_name = "PATH")]
    limits_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn count(s: &str) -> Result<u32, String> {
    let v: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if v < 0 {
        return Err(format!("must not be negative (got {v})"));
    }
    u32::try_from(v).map_err(|_| format!("{v} is too large"))
}

fn positive(s: &str) -> Result<u32, String> {
    match count(s)? {
        0 => Err("must be at least 1 (got 0)".to_string()),
        v => Ok(v),
    }
}

fn cidr(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 CIDR such as 10.0.0.0/24"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// A VPC subnet: a CIDR of size /16 to /28, as EC2 CreateSubnet allows.
fn subnet(s: &str) -> Result<Ipv4Net, String> {
    let net = cidr(s)?;
    if !(16..=28).contains(&net.prefix_len()) {
        return Err(format!(
            "`{s}` is a /{}: VPC subnets are /16 to /28",
            net.prefix_len()
        ));
    }
    Ok(net)
}

pub fn run(args: &PlanArgs) -> Result<ExitCode, PlanError> {
    let table = match &args.limits_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| PlanError::ReadLimits {
                path: path.clone(),
                source,
            })?;
            limits::LimitsTable::parse(&text, &path.display().to_string())?
        }
        None => limits::LimitsTable::embedded()?,
    };
    let instance = table.get(&args.instance_type)?.clone();
    let vcpus = match args.vcpus {
        Some(count) => Some(vcpus::Vcpus {
            count,
            source: vcpus::VcpuSource::Flag,
        }),
        None => vcpus::estimate(&instance.instance_type),
    };
    let input = model::PlanInput {
        limits: instance,
        vcpus,
        nodes: args.nodes,
        pods_per_node: args.pods_per_node,
        host_network_pods: args.host_network_pods,
        node_subnets: args.subnets.clone(),
        pod_subnets: args.pod_subnets.clone(),
        vpc_cidrs: args.vpc_cidrs.clone(),
        cni: model::CniSettings {
            warm_eni_target: args.warm_eni_target,
            warm_ip_target: args.warm_ip_target,
            minimum_ip_target: args.minimum_ip_target,
            prefix_delegation: args.prefix_delegation,
            warm_prefix_target: args.warm_prefix_target,
            custom_networking: args.custom_networking,
            max_eni: args.max_eni,
            pod_eni: args.pod_eni,
            sg_pods_per_node: args.sg_pods_per_node,
        },
        max_pods: args.max_pods,
        overlay: model::OverlaySettings {
            cluster_cidr: args.cluster_cidr,
            node_subnet_len: args
                .node_subnet_len
                .unwrap_or_else(|| model::default_node_subnet_len(&args.cluster_cidr)),
        },
    };
    let report = model::plan(&input)?;
    let text = match args.output {
        Output::Text => render::text(&report),
        Output::Json => render::json(&report)? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(PlanError::Stdout(e)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_parsers() {
        assert_eq!(count("0"), Ok(0));
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").unwrap_err().contains("at least 1"));
        assert!(positive("-5").unwrap_err().contains("negative"));
        assert!(count("five").unwrap_err().contains("not a whole number"));
        assert!(count("99999999999").unwrap_err().contains("too large"));
    }

    #[test]
    fn cidr_parsers() {
        assert_eq!(subnet("10.0.0.0/24"), Ok("10.0.0.0/24".parse().unwrap()));
        assert!(subnet("10.0.0.5/24")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/24"));
        assert!(subnet("10.0.0.0/29").unwrap_err().contains("/16 to /28"));
        assert!(subnet("10.0.0.0/8").unwrap_err().contains("/16 to /28"));
        assert!(subnet("10.0.0/24")
            .unwrap_err()
            .contains("not an IPv4 CIDR"));
        assert_eq!(cidr("10.244.0.0/16"), Ok("10.244.0.0/16".parse().unwrap()));
    }
}
