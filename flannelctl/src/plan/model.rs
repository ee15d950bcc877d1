//! The planner's arithmetic: a validated `PlanInput` in, a `PlanReport` out.
//! No I/O here. Every rule comes from shared/docs/VPC-CNI-FACTS.md; each
//! figure carries the rule that produced it so the operator can check it.

use super::limits::{Hypervisor, InstanceLimits};
use super::vcpus::{VcpuSource, Vcpus};
use ipnet::Ipv4Net;
use serde::Serialize;

/// AWS keeps the network address, base+1..base+3 and the last address.
pub const AWS_RESERVED_PER_SUBNET: u64 = 5;
/// IPs in one delegated /28 prefix.
const PREFIX_IPS: u64 = 16;
/// EKS's max-pods-calculator ceiling for types with at most
/// `CALCULATOR_LOW_CPU_LIMIT` vCPUs (also kubelet's default --max-pods).
const CALCULATOR_CAP_LOW_CPU: u64 = 110;
/// ... and for types with more vCPUs.
const CALCULATOR_CAP_HIGH_CPU: u64 = 250;
const CALCULATOR_LOW_CPU_LIMIT: u32 = 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("{what} must be at least 1 (got 0)")]
    Zero { what: &'static str },
    #[error("no VPC subnet given: pass --subnet CIDR once per node subnet (one per AZ)")]
    NoSubnets,
    #[error("subnet {subnet} is a /{len}: VPC subnets are /16 to /28")]
    SubnetSize { subnet: Ipv4Net, len: u8 },
    #[error("subnets {a} and {b} overlap: each VPC address can only be counted once")]
    Overlap { a: Ipv4Net, b: Ipv4Net },
    #[error(
        "--pod-subnet is for custom networking: add --custom-networking, or drop --pod-subnet"
    )]
    PodSubnetsWithoutCustom,
    #[error("custom networking takes pod IPs from the ENIConfig subnets: pass --pod-subnet CIDR (e.g. 100.64.0.0/16)")]
    CustomWithoutPodSubnets,
    #[error("WARM_PREFIX_TARGET only applies with prefix delegation: add --prefix-delegation or drop --warm-prefix-target")]
    WarmPrefixWithoutPd,
    #[error("WARM_ENI_TARGET with prefix delegation is not modelled here: use --warm-prefix-target (or --warm-ip-target/--minimum-ip-target)")]
    WarmEniWithPd,
    #[error("{instance_type} does not support prefix delegation (hypervisor {hypervisor:?}; PD needs Nitro or bare metal): drop --prefix-delegation or pick a Nitro type")]
    PdUnsupported {
        instance_type: String,
        hypervisor: Hypervisor,
    },
    #[error("prefix delegation with WARM_PREFIX_TARGET=0 and no WARM_IP_TARGET/MINIMUM_IP_TARGET is not supported by the VPC CNI: set one of them to at least 1")]
    PdZeroWarm,
    #[error("the max-pods ceiling of EKS's max-pods-calculator (110 up to 30 vCPUs, else 250) applies to {instance_type} ({raw} by the {what} formula) and needs its vCPU count, which its name does not tell: pass --vcpus N (or --max-pods N)")]
    VcpusUnknown {
        instance_type: String,
        what: &'static str,
        raw: u64,
    },
    #[error("cluster CIDR {cidr} overlaps VPC {what} {subnet}: pod addresses would shadow VPC addresses (replies to those hosts would stay on the node); pick a range outside the VPC, e.g. 10.244.0.0/16 or 100.64.0.0/16 when the VPC uses 10.0.0.0/8")]
    ClusterCidrOverlapsVpc {
        cidr: Ipv4Net,
        what: &'static str,
        subnet: Ipv4Net,
    },
    #[error("subnet {subnet} is not inside any --vpc-cidr ({vpc}): check the subnet or add the VPC's other CIDR block")]
    SubnetOutsideVpc { subnet: Ipv4Net, vpc: String },
    #[error("--pods-per-node {pods} is more than a /{len} node subnet holds ({pod_ips} pod addresses): no node could run them; pass --node-subnet-len {fit} (or shorter) or plan fewer pods per node")]
    PodsOverNodeSubnet {
        pods: u32,
        len: u8,
        pod_ips: u64,
        fit: u8,
    },
    #[error("{instance_type} has {enis} usable ENI(s) after MAX_ENI, and {reserved}: no ENI is left for pod IPs; raise --max-eni or pick a larger type")]
    NoPodEnis {
        instance_type: String,
        enis: u32,
        reserved: String,
    },
    #[error("--sg-pods-per-node needs security groups for pods: add --pod-eni")]
    SgPodsWithoutPodEni,
    #[error("--sg-pods-per-node ({sg}) exceeds --pods-per-node ({pods}): SG pods are counted among the pods")]
    SgPodsOverPods { sg: u32, pods: u32 },
    #[error("cluster CIDR {cidr} is smaller than /28: flannel rejects it")]
    ClusterCidrTooSmall { cidr: Ipv4Net },
    #[error("--node-subnet-len {len} does not fit cluster CIDR {cidr}: it must be between /{min} and /30")]
    NodeSubnetLen { len: u8, cidr: Ipv4Net, min: u8 },
}

/// The VPC CNI environment variables the planner models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniSettings {
    /// WARM_ENI_TARGET; `None` = default 1 (secondary-IP mode).
    pub warm_eni_target: Option<u32>,
    pub warm_ip_target: Option<u32>,
    pub minimum_ip_target: Option<u32>,
    pub prefix_delegation: bool,
    /// WARM_PREFIX_TARGET; `None` = 1, as the manifest and Helm chart set.
    pub warm_prefix_target: Option<u32>,
    pub custom_networking: bool,
    /// MAX_ENI: can only lower the type's ENI count.
    pub max_eni: Option<u32>,
    /// ENABLE_POD_ENI (security groups for pods): a trunk ENI takes a slot.
    pub pod_eni: bool,
    /// Pods per node that use security groups (each on its own branch ENI).
    pub sg_pods_per_node: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySettings {
    pub cluster_cidr: Ipv4Net,
    pub node_subnet_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    pub limits: InstanceLimits,
    /// From `--vcpus` or the size-name estimate; only PD needs it.
    pub vcpus: Option<Vcpus>,
    pub nodes: u32,
    /// Pods per node that are not hostNetwork (they need a pod IP).
    pub pods_per_node: u32,
    /// hostNetwork pods per node (aws-node, kube-proxy, ...): they count
    /// against max pods but use the node IP.
    pub host_network_pods: u32,
    pub node_subnets: Vec<Ipv4Net>,
    pub pod_subnets: Vec<Ipv4Net>,
    /// The VPC's CIDR blocks (`--vpc-cidr`), when given: the subnets must
    /// lie inside and the cluster CIDR outside.
    pub vpc_cidrs: Vec<Ipv4Net>,
    pub cni: CniSettings,
    /// kubelet --max-pods set by the operator, instead of the formula.
    pub max_pods: Option<u32>,
    pub overlay: OverlaySettings,
}

/// A number and the rule that produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub value: u64,
    pub rule: String,
}

fn fig(value: u64, rule: impl Into<String>) -> Figure {
    Figure {
        value,
        rule: rule.into(),
    }
}

/// A labelled figure in a side's per-node breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    pub label: String,
    pub value: u64,
    pub rule: String,
}

fn detail(label: &str, f: Figure) -> Detail {
    Detail {
        label: label.to_string(),
        value: f.value,
        rule: f.rule,
    }
}

/// One set of subnets that nodes draw addresses from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolUse {
    pub name: String,
    pub subnets: Vec<String>,
    /// Sum over subnets of 2^(32-len) - 5.
    pub usable_ips: u64,
    pub ips_per_node: u64,
    pub needed_ips: u64,
    pub percent_used: f64,
    /// Nodes that fit, subnet by subnet (a node's ENIs share one subnet);
    /// `None` when nodes take no IPs from this pool.
    pub max_nodes: Option<u64>,
}

/// One CNI's side of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideReport {
    pub name: String,
    pub mode: String,
    /// What kubelet allows (VPC CNI) or what the node subnet allows (overlay).
    pub max_pods_per_node: Figure,
    /// Pod IPs a node can ever get.
    pub pod_ip_capacity_per_node: Figure,
    /// Per-node breakdown (ENIs, prefixes, warm IPs ...), in display order.
    pub details: Vec<Detail>,
    pub vpc_ips_per_node: Figure,
    pub cluster_vpc_ips: u64,
    pub pools: Vec<PoolUse>,
    pub max_nodes: Figure,
    pub fits: bool,
    /// max_nodes - nodes: spare nodes if positive, missing if negative.
    pub node_headroom: i64,
    /// Why it does not fit (empty when it fits).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub instance: InstanceLimits,
    pub vcpus: Option<Vcpus>,
    pub nodes: u32,
    pub pods_per_node: u32,
    pub host_network_pods: u32,
    pub vpc_cni: SideReport,
    pub overlay: SideReport,
    /// VPC addresses the cluster holds with the VPC CNI minus with the
    /// overlay (ENI primaries, secondaries and prefixes, in every pool).
    pub vpc_ips_saved: Figure,
    pub warnings: Vec<String>,
}

pub fn plan(input: &PlanInput) -> Result<PlanReport, ModelError> {
    validate(input)?;
    let mut warnings = Vec::new();
    let vpc_cni = vpc_cni_side(input, &mut warnings)?;
    let overlay = overlay_side(input, &mut warnings)?;
    let saved = vpc_cni
        .cluster_vpc_ips
        .saturating_sub(overlay.cluster_vpc_ips);
    let vpc_ips_saved = fig(
        saved,
        format!(
            "{} with the VPC CNI - {} with the overlay, {}% of the VPC CNI's",
            vpc_cni.cluster_vpc_ips,
            overlay.cluster_vpc_ips,
            percent(saved, vpc_cni.cluster_vpc_ips)
        ),
    );
    Ok(PlanReport {
        instance: input.limits.clone(),
        vcpus: input.vcpus,
        nodes: input.nodes,
        pods_per_node: input.pods_per_node,
        host_network_pods: input.host_network_pods,
        vpc_cni,
        overlay,
        vpc_ips_saved,
        warnings,
    })
}

/// EKS's max-pods-calculator (amazon-eks-ami): whatever the mode, the
/// formula's value is capped at 110 on types with at most 30 vCPUs and at
/// 250 above. The vCPU count is only needed when the formula gives more
/// than 110. `what` names the formula for the rule and the error.
fn calculator_max_pods(
    input: &PlanInput,
    raw: u64,
    formula: String,
    what: &'static str,
) -> Result<Figure, ModelError> {
    if raw <= CALCULATOR_CAP_LOW_CPU {
        return Ok(fig(
            raw,
            format!("{formula} (under EKS max-pods-calculator's ceiling of 110/250)"),
        ));
    }
    let vcpus = input.vcpus.ok_or_else(|| ModelError::VcpusUnknown {
        instance_type: input.limits.instance_type.clone(),
        what,
        raw,
    })?;
    let low = vcpus.count <= CALCULATOR_LOW_CPU_LIMIT;
    let cap = if low {
        CALCULATOR_CAP_LOW_CPU
    } else {
        CALCULATOR_CAP_HIGH_CPU
    };
    let source = match vcpus.source {
        VcpuSource::Flag => "--vcpus",
        VcpuSource::EstimatedFromSize => "estimated from the size name",
    };
    let verdict = if raw > cap { "capped at" } else { "under" };
    Ok(fig(
        raw.min(cap),
        format!(
            "{formula}, {verdict} {cap} because {} vCPUs ({source}) {} {CALCULATOR_LOW_CPU_LIMIT} (EKS max-pods-calculator)",
            vcpus.count,
            if low { "<=" } else { ">" }
        ),
    ))
}

/// The longest node subnet prefix whose pod addresses hold `pods`.
fn node_subnet_len_for(pods: u64) -> u8 {
    (2..=30u8)
        .rev()
        .find(|len| (1u64 << (32 - u32::from(*len))) - 3 >= pods)
        .unwrap_or(2)
}

fn validate(input: &PlanInput) -> Result<(), ModelError> {
    if input.nodes == 0 {
        return Err(ModelError::Zero { what: "--nodes" });
    }
    if input.max_pods == Some(0) {
        return Err(ModelError::Zero { what: "--max-pods" });
    }
    if input.cni.max_eni == Some(0) {
        return Err(ModelError::Zero { what: "--max-eni" });
    }
    if input.node_subnets.is_empty() {
        return Err(ModelError::NoSubnets);
    }
    let all: Vec<Ipv4Net> = input
        .node_subnets
        .iter()
        .chain(&input.pod_subnets)
        .copied()
        .collect();
    for (i, a) in all.iter().enumerate() {
        if !(16..=28).contains(&a.prefix_len()) {
            return Err(ModelError::SubnetSize {
                subnet: *a,
                len: a.prefix_len(),
            });
        }
        if let Some(b) = all[i + 1..]
            .iter()
            .find(|b| a.contains(*b) || b.contains(a))
        {
            return Err(ModelError::Overlap { a: *a, b: *b });
        }
    }
    let cni = &input.cni;
    match (cni.custom_networking, input.pod_subnets.is_empty()) {
        (false, false) => return Err(ModelError::PodSubnetsWithoutCustom),
        (true, true) => return Err(ModelError::CustomWithoutPodSubnets),
        _ => {}
    }
    if cni.warm_prefix_target.is_some() && !cni.prefix_delegation {
        return Err(ModelError::WarmPrefixWithoutPd);
    }
    if cni.prefix_delegation {
        if cni.warm_eni_target.is_some() {
            return Err(ModelError::WarmEniWithPd);
        }
        if !input.limits.prefix_delegation_supported {
            return Err(ModelError::PdUnsupported {
                instance_type: input.limits.instance_type.clone(),
                hypervisor: input.limits.hypervisor,
            });
        }
        let ip_targets = cni.warm_ip_target.is_some() || cni.minimum_ip_target.is_some();
        if cni.warm_prefix_target == Some(0) && !ip_targets {
            return Err(ModelError::PdZeroWarm);
        }
    }
    if cni.sg_pods_per_node > 0 && !cni.pod_eni {
        return Err(ModelError::SgPodsWithoutPodEni);
    }
    if cni.sg_pods_per_node > input.pods_per_node {
        return Err(ModelError::SgPodsOverPods {
            sg: cni.sg_pods_per_node,
            pods: input.pods_per_node,
        });
    }
    let cidr = input.overlay.cluster_cidr;
    if cidr.prefix_len() > 28 {
        return Err(ModelError::ClusterCidrTooSmall { cidr });
    }
    let len = input.overlay.node_subnet_len;
    let min = cidr.prefix_len() + 2;
    if len < min || len > 30 {
        return Err(ModelError::NodeSubnetLen { len, cidr, min });
    }
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(b) || b.contains(a);
    for (what, nets) in [
        ("CIDR", &input.vpc_cidrs),
        ("subnet", &input.node_subnets),
        ("subnet", &input.pod_subnets),
    ] {
        if let Some(sn) = nets.iter().find(|sn| overlaps(sn, &cidr)) {
            return Err(ModelError::ClusterCidrOverlapsVpc {
                cidr,
                what,
                subnet: *sn,
            });
        }
    }
    if !input.vpc_cidrs.is_empty() {
        for sn in input.node_subnets.iter().chain(&input.pod_subnets) {
            if !input.vpc_cidrs.iter().any(|v| v.contains(sn)) {
                let vpc: Vec<String> = input.vpc_cidrs.iter().map(|v| v.to_string()).collect();
                return Err(ModelError::SubnetOutsideVpc {
                    subnet: *sn,
                    vpc: vpc.join(", "),
                });
            }
        }
    }
    let pod_ips = (1u64 << (32 - u32::from(len))) - 3;
    if u64::from(input.pods_per_node) > pod_ips {
        return Err(ModelError::PodsOverNodeSubnet {
            pods: input.pods_per_node,
            len,
            pod_ips,
            fit: node_subnet_len_for(u64::from(input.pods_per_node)),
        });
    }
    Ok(())
}

/// flannel's SubnetLen default: /24 when the network is /22 or shorter,
/// else prefix + 2.
pub fn default_node_subnet_len(cluster_cidr: &Ipv4Net) -> u8 {
    if cluster_cidr.prefix_len() <= 22 {
        24
    } else {
        cluster_cidr.prefix_len() + 2
    }
}

fn usable(subnet: &Ipv4Net) -> u64 {
    (1u64 << (32 - subnet.prefix_len())) - AWS_RESERVED_PER_SUBNET
}

fn div_ceil(a: u64, b: u64) -> u64 {
    if b == 0 {
        0
    } else {
        a.div_ceil(b)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        // One decimal is what a table needs; JSON gets the same value.
        (part as f64 * 1000.0 / whole as f64).round() / 10.0
    }
}

/// How a node's pod IPs are pooled.
enum Pooling {
    /// Secondary IPs, whole ENIs kept warm.
    WarmEni(u32),
    /// Secondary IPs, WARM_IP_TARGET / MINIMUM_IP_TARGET.
    WarmIp { w: Option<u32>, m: Option<u32> },
    /// /28 prefixes, WARM_PREFIX_TARGET.
    WarmPrefix(u32),
    /// /28 prefixes sized by WARM_IP_TARGET / MINIMUM_IP_TARGET.
    PrefixIp { w: Option<u32>, m: Option<u32> },
}

/// What one node holds from ipamd (pod ENIs only: with custom networking the
/// primary ENI is not among them).
struct Holding {
    enis: u64,
    /// Secondary IPs or prefixes attached.
    slots_used: u64,
    pod_ips: u64,
    /// Pod IPs this node could ever get under these settings.
    capacity: u64,
    capacity_rule: String,
    eni_rule: String,
    rule: String,
}

fn vpc_cni_side(input: &PlanInput, warnings: &mut Vec<String>) -> Result<SideReport, ModelError> {
    let lim = &input.limits;
    let cni = &input.cni;
    let custom = cni.custom_networking;
    let s = u64::from(lim.ipv4_per_eni - 1);
    let enis_type = u64::from(lim.max_enis);
    let enis = cni
        .max_eni
        .map_or(enis_type, |m| enis_type.min(u64::from(m)));
    if cni.max_eni.is_some_and(|m| u64::from(m) > enis_type) {
        warnings.push(format!(
            "MAX_ENI={} is above {}'s {} ENIs: it can only lower the count, so {} is used",
            cni.max_eni.unwrap_or(0),
            lim.instance_type,
            enis_type,
            enis_type
        ));
    }
    // The formula's ENIs: custom networking keeps pods off the primary ENI.
    let formula_enis = enis - u64::from(custom);
    // ENIs ipamd may fill with pod IPs: the trunk ENI also takes one slot.
    let reserved = u64::from(custom) + u64::from(cni.pod_eni);
    if enis <= reserved {
        let mut why = Vec::new();
        if custom {
            why.push("custom networking keeps the primary ENI");
        }
        if cni.pod_eni {
            why.push("security groups for pods take one for the trunk");
        }
        return Err(ModelError::NoPodEnis {
            instance_type: lim.instance_type.clone(),
            enis: enis as u32,
            reserved: why.join(" and "),
        });
    }
    let pod_enis = enis - reserved;
    let eni_word = if custom { "(ENIs - 1)" } else { "ENIs" };

    // Max pods (kubelet).
    let max_pods = if let Some(mp) = input.max_pods {
        fig(
            u64::from(mp),
            "set with --max-pods (the node's kubelet --max-pods)",
        )
    } else if cni.prefix_delegation {
        let raw = formula_enis * s * PREFIX_IPS + 2;
        calculator_max_pods(
            input,
            raw,
            format!(
                "prefix delegation: {eni_word} x (IPv4 per ENI - 1) x 16 + 2 = {formula_enis} x {s} x 16 + 2 = {raw}"
            ),
            "prefix-delegation",
        )?
    } else {
        let raw = formula_enis * s + 2;
        calculator_max_pods(
            input,
            raw,
            format!(
                "secondary IPs: {eni_word} x (IPv4 per ENI - 1) + 2 = {formula_enis} x {s} + 2 = {raw} \
                 (the +2 are hostNetwork aws-node and kube-proxy)"
            ),
            "secondary-IP",
        )?
    };
    let formula_pods = if cni.prefix_delegation {
        formula_enis * s * PREFIX_IPS + 2
    } else {
        formula_enis * s + 2
    };
    if max_pods.value > formula_pods {
        warnings.push(format!(
            "--max-pods {} is above what {} can address ({formula_pods}): pods beyond that stay in ContainerCreating",
            max_pods.value, lim.instance_type
        ));
    }

    let sg = u64::from(cni.sg_pods_per_node);
    let n = u64::from(input.pods_per_node);
    // SG pods get branch ENIs, not ipamd IPs.
    let n_ip = n - sg;

    let pooling = pooling(cni);
    let h = holding(&pooling, n_ip, pod_enis, s, max_pods.value);

    // The primary ENI is always attached; outside custom networking it is
    // also the first pod ENI, so count it only when ipamd attached none.
    let primary_separate = custom || h.enis == 0;
    let trunk = u64::from(cni.pod_eni);
    let pod_pool_ips = h.pod_ips + h.enis + trunk + sg;
    let (node_subnet_ips, pod_subnet_ips) = if custom {
        (1, pod_pool_ips)
    } else {
        (pod_pool_ips + u64::from(primary_separate), 0)
    };
    let per_node_total = node_subnet_ips + pod_subnet_ips;

    let eni_rule = if custom {
        format!(
            "1 primary (node subnet) + {} pod ENIs (ENIConfig subnet; {}){}",
            h.enis,
            h.eni_rule,
            trunk_note(trunk)
        )
    } else {
        format!("{}{}", h.eni_rule, trunk_note(trunk))
    };
    let slots_label = if cni.prefix_delegation {
        "/28 prefixes"
    } else {
        "secondary IPs"
    };
    let mut details = vec![
        detail(
            "ENIs attached",
            fig(h.enis + u64::from(primary_separate) + trunk, eni_rule),
        ),
        detail(slots_label, fig(h.slots_used, h.rule.clone())),
        detail(
            "warm (free) pod IPs",
            fig(
                h.pod_ips.saturating_sub(n_ip),
                format!("pod IPs held ({}) - pods using them ({n_ip})", h.pod_ips),
            ),
        ),
    ];
    if sg > 0 {
        details.push(detail(
            "branch ENIs (SG pods)",
            fig(
                sg,
                "one branch ENI per security-group pod, 1 subnet IP each, not warm-pooled",
            ),
        ));
    }
    if custom {
        details.push(detail(
            "IPs in node subnet",
            fig(1, "the primary ENI's address"),
        ));
        details.push(detail(
            "IPs in ENIConfig subnet",
            fig(
                pod_subnet_ips,
                format!(
                    "pod IPs held {} + one primary per pod ENI {}{}",
                    h.pod_ips,
                    h.enis,
                    if trunk + sg > 0 {
                        " + trunk and branch ENIs"
                    } else {
                        ""
                    }
                ),
            ),
        ));
    }
    let vpc_ips_per_node = fig(
        per_node_total,
        format!(
            "{} pod IPs held + {} ENI primary addresses{}",
            h.pod_ips,
            h.enis + u64::from(primary_separate),
            if trunk + sg > 0 {
                " + trunk and branch ENIs"
            } else {
                ""
            }
        ),
    );

    let mut pools = Vec::new();
    if custom {
        pools.push(pool(
            "node subnets",
            &input.node_subnets,
            input.nodes,
            1,
            None,
        ));
        pools.push(pool(
            "ENIConfig (pod) subnets",
            &input.pod_subnets,
            input.nodes,
            pod_subnet_ips,
            cni.prefix_delegation
                .then_some((h.slots_used, h.enis + trunk + sg)),
        ));
    } else {
        pools.push(pool(
            "node subnets",
            &input.node_subnets,
            input.nodes,
            node_subnet_ips,
            cni.prefix_delegation.then_some((
                h.slots_used,
                h.enis + u64::from(primary_separate) + trunk + sg,
            )),
        ));
    }

    let mut problems = Vec::new();
    let kubelet_pods = n + u64::from(input.host_network_pods);
    if kubelet_pods > max_pods.value {
        problems.push(format!(
            "does not fit: max pods {} per node, but {n} pods + {} hostNetwork pods = {kubelet_pods}",
            max_pods.value, input.host_network_pods
        ));
    }
    if n_ip > h.capacity {
        problems.push(format!(
            "does not fit: a node can get at most {} pod IPs ({}), but {n_ip} pods need one",
            h.capacity, h.capacity_rule
        ));
    }
    let side = finish_side(
        "AWS VPC CNI",
        mode_text(cni, &pooling),
        max_pods,
        fig(h.capacity, h.capacity_rule.clone()),
        details,
        vpc_ips_per_node,
        pools,
        input.nodes,
        None,
        problems,
    );
    vpc_cni_warnings(input, pod_enis, s, warnings);
    Ok(side)
}

fn trunk_note(trunk: u64) -> &'static str {
    if trunk > 0 {
        " + 1 trunk ENI"
    } else {
        ""
    }
}

fn pooling(cni: &CniSettings) -> Pooling {
    let ip_targets = cni.warm_ip_target.is_some() || cni.minimum_ip_target.is_some();
    match (cni.prefix_delegation, ip_targets) {
        (true, true) => Pooling::PrefixIp {
            w: cni.warm_ip_target,
            m: cni.minimum_ip_target,
        },
        (true, false) => Pooling::WarmPrefix(cni.warm_prefix_target.unwrap_or(1)),
        (false, true) => Pooling::WarmIp {
            w: cni.warm_ip_target,
            m: cni.minimum_ip_target,
        },
        (false, false) => Pooling::WarmEni(cni.warm_eni_target.unwrap_or(1)),
    }
}

fn mode_text(cni: &CniSettings, pooling: &Pooling) -> String {
    let base = match pooling {
        Pooling::WarmEni(w) => format!("secondary IPs, WARM_ENI_TARGET={w}"),
        Pooling::WarmIp { w, m } => format!("secondary IPs, {}", ip_targets_text(*w, *m)),
        Pooling::WarmPrefix(p) => format!("prefix delegation, WARM_PREFIX_TARGET={p}"),
        Pooling::PrefixIp { w, m } => format!("prefix delegation, {}", ip_targets_text(*w, *m)),
    };
    let mut extras = Vec::new();
    if cni.custom_networking {
        extras.push("custom networking".to_string());
    }
    if let Some(m) = cni.max_eni {
        extras.push(format!("MAX_ENI={m}"));
    }
    if cni.pod_eni {
        extras.push("security groups for pods".to_string());
    }
    if extras.is_empty() {
        base
    } else {
        format!("{base}, {}", extras.join(", "))
    }
}

fn ip_targets_text(w: Option<u32>, m: Option<u32>) -> String {
    let show = |v: Option<u32>| v.map_or("unset".to_string(), |v| v.to_string());
    format!("WARM_IP_TARGET={}, MINIMUM_IP_TARGET={}", show(w), show(m))
}

/// The warm-pool arithmetic (facts doc section 2) for `n` pods that need an
/// ipamd IP, on `pod_enis` ENIs of `s` slots, pool capped at `max_pods`
/// (isDatastorePoolTooLow stops growing once total IPs >= max pods; we stop
/// at the first allocation unit that reaches it).
fn holding(pooling: &Pooling, n: u64, pod_enis: u64, s: u64, max_pods: u64) -> Holding {
    let slots_max = pod_enis * s;
    match *pooling {
        Pooling::WarmEni(w) => {
            let w = u64::from(w);
            let needed = div_ceil(n, s);
            let cap = div_ceil(max_pods, s).max(needed);
            let enis = (needed + w).min(pod_enis).min(cap);
            let mut eni_rule = format!(
                "WARM_ENI_TARGET: min(pod ENIs {pod_enis}, ceil(pods {n} / {s}) + {w}) = {enis}"
            );
            if (needed + w).min(pod_enis) > cap {
                eni_rule.push_str(&format!("; the pool stops growing at max pods {max_pods}"));
            }
            let rule = format!("{enis} ENIs x {s}: ipamd fills a new ENI at once");
            Holding {
                eni_rule,
                enis,
                slots_used: enis * s,
                pod_ips: enis * s,
                capacity: slots_max,
                capacity_rule: format!("{pod_enis} pod ENIs x {s} secondary IPs"),
                rule,
            }
        }
        Pooling::WarmIp { w, m } => {
            let (target, capacity, how) = ip_target(n, w, m);
            let total = target.min(slots_max).min(max_pods);
            let enis = div_ceil(total, s);
            let rule = format!(
                "{how}: min({target}, pod ENIs {pod_enis} x {s}, max pods {max_pods}) = {total}"
            );
            Holding {
                eni_rule: format!("ceil(secondaries {total} / {s})"),
                enis,
                slots_used: total,
                pod_ips: total,
                capacity: capacity.min(slots_max),
                capacity_rule: if w.is_none() {
                    format!("MINIMUM_IP_TARGET only: ipamd stops at {}", m.unwrap_or(0))
                } else {
                    format!("{pod_enis} pod ENIs x {s} secondary IPs")
                },
                rule,
            }
        }
        Pooling::WarmPrefix(p) => {
            let p = u64::from(p);
            let target = div_ceil(n, PREFIX_IPS) + p;
            let prefixes = target
                .min(slots_max)
                .min(div_ceil(max_pods, PREFIX_IPS).max(div_ceil(n, PREFIX_IPS)));
            let enis = div_ceil(prefixes, s);
            let rule = format!(
                "WARM_PREFIX_TARGET: ceil(pods {n} / 16) + {p} = {target}, at most pod ENIs {pod_enis} x {s} slots and ceil(max pods {max_pods} / 16)"
            );
            Holding {
                eni_rule: format!("ceil(prefixes {prefixes} / {s} per ENI)"),
                enis,
                slots_used: prefixes,
                pod_ips: prefixes * PREFIX_IPS,
                capacity: slots_max * PREFIX_IPS,
                capacity_rule: format!("{pod_enis} pod ENIs x {s} prefixes x 16"),
                rule,
            }
        }
        Pooling::PrefixIp { w, m } => {
            let (target, capacity, how) = ip_target(n, w, m);
            let wanted = div_ceil(target, PREFIX_IPS);
            let prefixes = wanted
                .min(slots_max)
                .min(div_ceil(max_pods, PREFIX_IPS).max(div_ceil(n, PREFIX_IPS)));
            let enis = div_ceil(prefixes, s);
            let rule = format!(
                "{how} in prefix mode: ceil({target} / 16) = {wanted}, at most pod ENIs {pod_enis} x {s} slots and ceil(max pods {max_pods} / 16)"
            );
            Holding {
                eni_rule: format!("ceil(prefixes {prefixes} / {s} per ENI)"),
                enis,
                slots_used: prefixes,
                pod_ips: prefixes * PREFIX_IPS,
                capacity: capacity
                    .div_ceil(PREFIX_IPS)
                    .saturating_mul(PREFIX_IPS)
                    .min(slots_max * PREFIX_IPS),
                capacity_rule: if w.is_none() {
                    format!(
                        "MINIMUM_IP_TARGET only: ipamd stops at ceil({} / 16) prefixes",
                        m.unwrap_or(0)
                    )
                } else {
                    format!("{pod_enis} pod ENIs x {s} prefixes x 16")
                },
                rule,
            }
        }
    }
}

/// Target pod IPs under WARM_IP_TARGET (w) / MINIMUM_IP_TARGET (m), the
/// capacity that implies, and a description.
fn ip_target(n: u64, w: Option<u32>, m: Option<u32>) -> (u64, u64, String) {
    let m_v = u64::from(m.unwrap_or(0));
    match w {
        // With only m, ipamd tops up to m and then stops: pods beyond m get
        // no IP (README).
        None => (
            m_v,
            m_v,
            format!("MINIMUM_IP_TARGET only: pool stays at {m_v}"),
        ),
        Some(w) => {
            let w = u64::from(w);
            (
                (n + w).max(m_v),
                u64::MAX,
                format!("WARM_IP_TARGET: max(pods {n} + {w}, minimum {m_v})"),
            )
        }
    }
}

/// `prefixes` = Some((prefixes per node, other ENI addresses per node)) in
/// PD mode, where a subnet also needs free aligned /28 blocks.
fn pool(
    name: &str,
    subnets: &[Ipv4Net],
    nodes: u32,
    ips_per_node: u64,
    prefixes: Option<(u64, u64)>,
) -> PoolUse {
    let usable_ips: u64 = subnets.iter().map(usable).sum();
    let needed_ips = u64::from(nodes) * ips_per_node;
    let max_nodes = (ips_per_node > 0).then(|| {
        subnets
            .iter()
            .map(|sn| match prefixes {
                Some((p, singles)) => pd_nodes_in_subnet(sn.prefix_len(), p, singles),
                None => usable(sn) / ips_per_node,
            })
            .sum()
    });
    PoolUse {
        name: name.to_string(),
        subnets: subnets.iter().map(ToString::to_string).collect(),
        usable_ips,
        ips_per_node,
        needed_ips,
        percent_used: percent(needed_ips, usable_ips),
        max_nodes,
    }
}

/// Nodes that fit in one subnet of length `len` when each node needs
/// `prefixes` aligned /28 blocks plus `singles` single addresses (ENI
/// primaries). Best case, no fragmentation: the first and last /28 hold the
/// AWS-reserved addresses (4 at the start, 1 at the end), so their other
/// 12 + 15 addresses can take single addresses but no prefix.
pub fn pd_nodes_in_subnet(len: u8, prefixes: u64, singles: u64) -> u64 {
    let blocks = 1u64 << (28 - u32::from(len.min(28)));
    let free_blocks = blocks.saturating_sub(2);
    let spare_singles = if blocks >= 2 { 27 } else { 11 };
    let fits = |k: u64| {
        let single_blocks = div_ceil((k * singles).saturating_sub(spare_singles), PREFIX_IPS);
        k * prefixes + single_blocks <= free_blocks
    };
    // Monotone in k: binary search the largest k that fits.
    let (mut lo, mut hi) = (0u64, (blocks * PREFIX_IPS) + 1);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[allow(clippy::too_many_arguments)]
fn finish_side(
    name: &str,
    mode: String,
    max_pods: Figure,
    capacity: Figure,
    details: Vec<Detail>,
    vpc_ips_per_node: Figure,
    pools: Vec<PoolUse>,
    nodes: u32,
    extra_limit: Option<Figure>,
    mut problems: Vec<String>,
) -> SideReport {
    let mut max_nodes = fig(u64::MAX, "no limit");
    for p in &pools {
        if let Some(m) = p.max_nodes {
            if m < max_nodes.value {
                max_nodes = fig(
                    m,
                    format!(
                        "{} ({} usable IPs, {} per node, subnet by subnet)",
                        p.name, p.usable_ips, p.ips_per_node
                    ),
                );
            }
        }
    }
    if let Some(limit) = extra_limit {
        if limit.value < max_nodes.value {
            max_nodes = limit;
        }
    }
    let cluster_vpc_ips = u64::from(nodes) * vpc_ips_per_node.value;
    let node_headroom = i64::try_from(max_nodes.value).unwrap_or(i64::MAX) - i64::from(nodes);
    if node_headroom < 0 {
        problems.push(format!(
            "does not fit: {} nodes, but at most {} fit ({})",
            nodes, max_nodes.value, max_nodes.rule
        ));
    }
    SideReport {
        name: name.to_string(),
        mode,
        max_pods_per_node: max_pods,
        pod_ip_capacity_per_node: capacity,
        details,
        vpc_ips_per_node,
        cluster_vpc_ips,
        pools,
        max_nodes,
        fits: problems.is_empty(),
        node_headroom,
        problems,
    }
}

fn vpc_cni_warnings(input: &PlanInput, pod_enis: u64, s: u64, warnings: &mut Vec<String>) {
    let cni = &input.cni;
    let lim = &input.limits;
    let ip_targets = cni.warm_ip_target.is_some() || cni.minimum_ip_target.is_some();
    if ip_targets && cni.warm_eni_target.is_some() {
        warnings.push(
            "WARM_ENI_TARGET is ignored: WARM_IP_TARGET/MINIMUM_IP_TARGET are set".to_string(),
        );
    }
    if let Some(w) = cni.warm_ip_target {
        if w == 0 {
            warnings
                .push("WARM_IP_TARGET=0 breaks ipamd (issue #2482): use at least 1".to_string());
        } else if u64::from(w) < s {
            warnings.push(format!(
                "WARM_IP_TARGET={w} is below one ENI's {s} IPs: ipamd calls EC2 every few pods; with {} nodes expect API throttling when pods churn or nodes start together (README; issues #405, #617, #2730)",
                input.nodes
            ));
        }
    }
    if cni.warm_ip_target.is_none() && cni.minimum_ip_target.is_some() {
        warnings.push(format!(
            "only MINIMUM_IP_TARGET is set: the pool stays at {} IPs and pods beyond that get no IP (README); set WARM_IP_TARGET too",
            cni.minimum_ip_target.unwrap_or(0)
        ));
    }
    if cni.warm_eni_target == Some(0) && !ip_targets {
        warnings.push("WARM_ENI_TARGET=0 breaks ipamd (issue #2482): use at least 1".to_string());
    }
    if cni.prefix_delegation && ip_targets && cni.warm_prefix_target.is_some() {
        warnings.push(
            "WARM_PREFIX_TARGET is ignored: WARM_IP_TARGET/MINIMUM_IP_TARGET size the prefix pool (docs/prefix-and-ip-target.md)"
                .to_string(),
        );
    }
    if cni.prefix_delegation {
        warnings.push(
            "prefix delegation needs free, aligned /28 blocks: in a fragmented subnet allocation fails with InsufficientCidrBlocks (issues #2749, #3264); use a dedicated subnet or a subnet CIDR reservation. Max nodes assume no fragmentation."
                .to_string(),
        );
        if lim.is_bare_metal && input.max_pods.is_none() {
            warnings.push(format!(
                "{} is bare metal: EKS's max-pods-calculator checks only for nitro and would give it the secondary-IP value {}; set kubelet --max-pods yourself",
                lim.instance_type, lim.max_pods_secondary_ip
            ));
        }
    }
    if cni.custom_networking && input.max_pods.is_none() {
        warnings.push(
            "custom networking: EKS's default max pods ignores it (issue #331): set kubelet --max-pods to the value above, and replace existing nodes"
                .to_string(),
        );
    }
    if cni.pod_eni {
        warnings.push(format!(
            "security groups for pods: the trunk ENI leaves {} ENIs for ordinary pods; check the branch ENI limit of {} (vpc-resource-controller limits.go, e.g. m5.large 9), it is not in the limits table",
            pod_enis,
            lim.instance_type
        ));
    }
    if lim.network_cards > 1 {
        warnings.push(format!(
            "{} has {} network cards: only card 0's {} ENIs are counted (ipamd manages the others only with ENABLE_MULTI_NIC=true)",
            lim.instance_type, lim.network_cards, lim.max_enis
        ));
    }
}

fn overlay_side(input: &PlanInput, warnings: &mut Vec<String>) -> Result<SideReport, ModelError> {
    let cidr = input.overlay.cluster_cidr;
    let len = input.overlay.node_subnet_len;
    let node_subnet_size = 1u64 << (32 - u32::from(len));
    let pod_ips = node_subnet_size - 3;
    let count = (1u64 << u32::from(len - cidr.prefix_len())) - 1;
    let n = u64::from(input.pods_per_node);
    let capacity = fig(
        pod_ips,
        format!(
            "pod IPs in a /{len} node subnet: {node_subnet_size} - network, gateway (bridge) and broadcast"
        ),
    );
    // What kubelet allows: --max-pods when given, else what EKS's
    // calculator would set (the same ceiling as on the VPC CNI side), and
    // never more than the node subnet's pod addresses.
    let max_pods = match input.max_pods {
        Some(mp) if u64::from(mp) > pod_ips => {
            warnings.push(format!(
                "overlay: --max-pods {mp} is above the {pod_ips} pod addresses of a /{len} node subnet: pods beyond that stay in ContainerCreating"
            ));
            fig(
                pod_ips,
                format!("--max-pods {mp}, bounded by the /{len} node subnet's {pod_ips} pod IPs"),
            )
        }
        Some(mp) => fig(
            u64::from(mp),
            "set with --max-pods (the node's kubelet --max-pods)",
        ),
        None => {
            let f = calculator_max_pods(
                input,
                pod_ips,
                format!("the /{len} node subnet's {pod_ips} pod IPs"),
                "overlay node subnet",
            )?;
            if f.value < pod_ips {
                fig(
                    f.value,
                    format!(
                        "{}; kubelet --max-pods up to {pod_ips} raises it (plan it with --max-pods)",
                        f.rule
                    ),
                )
            } else {
                f
            }
        }
    };
    let details = vec![detail(
        "node subnets in cluster CIDR",
        fig(
            count,
            format!(
                "2^({len} - {}) - 1: the first subnet is skipped (flannel SubnetMin)",
                cidr.prefix_len()
            ),
        ),
    )];
    // validate() refused more pods than the node subnet holds.
    let mut problems = Vec::new();
    let kubelet_pods = n + u64::from(input.host_network_pods);
    if kubelet_pods > max_pods.value {
        problems.push(format!(
            "does not fit: max pods {} per node, but {n} pods + {} hostNetwork pods = {kubelet_pods}{}",
            max_pods.value,
            input.host_network_pods,
            if max_pods.value < pod_ips {
                format!(" (kubelet --max-pods up to {pod_ips} would fit them: plan with --max-pods)")
            } else {
                String::new()
            }
        ));
    }
    let pools = vec![pool(
        "node subnets",
        &input.node_subnets,
        input.nodes,
        1,
        None,
    )];
    Ok(finish_side(
        "overlay (flannel-rs)",
        format!("VXLAN overlay, cluster CIDR {cidr}, /{len} per node"),
        max_pods,
        capacity,
        details,
        fig(
            1,
            "the node's primary ENI address; pods use the cluster CIDR",
        ),
        pools,
        input.nodes,
        Some(fig(
            count,
            format!("node subnets in {cidr} (/{len} each, first skipped)"),
        )),
        problems,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::limits::LimitsTable;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn input(ty: &str, nodes: u32, pods: u32) -> PlanInput {
        let table = LimitsTable::embedded().unwrap();
        PlanInput {
            limits: table.get(ty).unwrap().clone(),
            vcpus: crate::plan::vcpus::estimate(ty),
            nodes,
            pods_per_node: pods,
            host_network_pods: 2,
            node_subnets: vec![net("10.0.0.0/16")],
            pod_subnets: vec![],
            vpc_cidrs: vec![],
            cni: CniSettings::default(),
            max_pods: None,
            overlay: OverlaySettings {
                cluster_cidr: net("10.244.0.0/16"),
                node_subnet_len: 24,
            },
        }
    }

    fn detail(side: &SideReport, label: &str) -> u64 {
        side.details
            .iter()
            .find(|d| d.label == label)
            .unwrap_or_else(|| panic!("no detail {label}"))
            .value
    }

    #[test]
    fn m5_large_secondary_ip_max_pods_29() {
        let r = plan(&input("m5.large", 1, 0)).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 29);
        assert_eq!(r.vpc_cni.pod_ip_capacity_per_node.value, 27);
    }

    #[test]
    fn m5_large_warm_eni_idle_10_and_10_pods_30() {
        let r = plan(&input("m5.large", 1, 0)).unwrap();
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 10);
        assert_eq!(detail(&r.vpc_cni, "ENIs attached"), 1);
        let r = plan(&input("m5.large", 1, 10)).unwrap();
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 30);
        assert_eq!(detail(&r.vpc_cni, "ENIs attached"), 3);
        assert_eq!(detail(&r.vpc_cni, "warm (free) pod IPs"), 17);
    }

    #[test]
    fn t3_small_0_5_9_pods_hold_3_9_9_secondaries() {
        for (pods, secondaries) in [(0, 3), (5, 9), (9, 9)] {
            let r = plan(&input("t3.small", 1, pods)).unwrap();
            assert_eq!(
                detail(&r.vpc_cni, "secondary IPs"),
                secondaries,
                "{pods} pods"
            );
        }
    }

    #[test]
    fn p3dn_3_pods_hold_98_secondaries() {
        let r = plan(&input("p3dn.24xlarge", 1, 3)).unwrap();
        assert_eq!(detail(&r.vpc_cni, "secondary IPs"), 98);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 100);
    }

    #[test]
    fn warm_eni_target_2_and_max_eni() {
        let mut i = input("m5.large", 1, 0);
        i.cni.warm_eni_target = Some(2);
        assert_eq!(plan(&i).unwrap().vpc_cni.vpc_ips_per_node.value, 20);
        i.cni.max_eni = Some(2);
        i.pods_per_node = 10;
        let r = plan(&i).unwrap();
        // ceil(10/9)+2 = 4 ENIs wanted, MAX_ENI=2 allows 2.
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 20);
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 2 * 9 + 2);
    }

    #[test]
    fn custom_networking_m5_large_20_max_pods_and_split_subnets() {
        let mut i = input("m5.large", 2, 0);
        i.cni.custom_networking = true;
        i.pod_subnets = vec![net("100.64.0.0/16")];
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 20);
        // Idle: primary ENI in the node subnet, one warm ENI (10 IPs) in the pod subnet.
        assert_eq!(detail(&r.vpc_cni, "IPs in node subnet"), 1);
        assert_eq!(detail(&r.vpc_cni, "IPs in ENIConfig subnet"), 10);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 11);
        assert_eq!(r.vpc_cni.pools[0].needed_ips, 2);
        assert_eq!(r.vpc_cni.pools[1].needed_ips, 20);
        // 18 pods fill both pod ENIs; the pool cannot grow past 2 ENIs.
        i.pods_per_node = 18;
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "IPs in ENIConfig subnet"), 20);
        assert!(r.vpc_cni.fits);
        i.pods_per_node = 19;
        let r = plan(&i).unwrap();
        assert!(!r.vpc_cni.fits);
        assert!(
            r.vpc_cni.problems[0].contains("max pods 20"),
            "{:?}",
            r.vpc_cni.problems
        );
    }

    #[test]
    fn prefix_delegation_m5_large_434_capped_to_110() {
        let mut i = input("m5.large", 1, 0);
        i.cni.prefix_delegation = true;
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 110);
        assert!(r.vpc_cni.max_pods_per_node.rule.contains("= 434"));
        assert!(r.vpc_cni.max_pods_per_node.rule.contains("capped at 110"));
        // Idle with WARM_PREFIX_TARGET=1: 1 prefix on the primary ENI.
        assert_eq!(detail(&r.vpc_cni, "/28 prefixes"), 1);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 17);
    }

    #[test]
    fn prefix_delegation_cap_250_above_30_vcpus() {
        let mut i = input("c5.9xlarge", 1, 0);
        i.cni.prefix_delegation = true;
        assert_eq!(plan(&i).unwrap().vpc_cni.max_pods_per_node.value, 250);
        i.vcpus = Some(Vcpus {
            count: 30,
            source: VcpuSource::Flag,
        });
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 110);
        assert!(r.vpc_cni.max_pods_per_node.rule.contains("--vcpus"));
    }

    #[test]
    fn prefix_delegation_custom_networking_raw_290() {
        let mut i = input("m5.large", 1, 0);
        i.cni.prefix_delegation = true;
        i.cni.custom_networking = true;
        i.pod_subnets = vec![net("100.64.0.0/16")];
        i.vcpus = Some(Vcpus {
            count: 64,
            source: VcpuSource::Flag,
        });
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 250);
        assert!(r.vpc_cni.max_pods_per_node.rule.contains("= 290"));
    }

    #[test]
    fn warm_prefix_target_cases() {
        let mut i = input("m5.large", 1, 20);
        i.cni.prefix_delegation = true;
        // 20 pods: ceil(20/16) + 1 = 3 prefixes, 1 ENI: 3*16 + 1.
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "/28 prefixes"), 3);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 49);
        i.cni.warm_prefix_target = Some(4);
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "/28 prefixes"), 6);
        // 100 pods, p=4: ceil(100/16)+4 = 11 wanted, but the pool stops at
        // ceil(110/16) = 7 prefixes; 7 prefixes need ceil(7/9) = 1 ENI.
        i.pods_per_node = 100;
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "/28 prefixes"), 7);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 7 * 16 + 1);
        // 10 prefixes (p=3, 100 pods, max pods raised) spill to a 2nd ENI.
        i.cni.warm_prefix_target = Some(3);
        i.max_pods = Some(200);
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "/28 prefixes"), 10);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 10 * 16 + 2);
    }

    #[test]
    fn warm_ip_and_minimum_ip_target_cases() {
        let mut i = input("m5.large", 1, 5);
        i.cni.warm_ip_target = Some(2);
        // T = 5 + 2 = 7 secondaries on 1 ENI: 8 IPs.
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "secondary IPs"), 7);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 8);
        // MINIMUM_IP_TARGET=12 wins: 12 secondaries on 2 ENIs: 14 IPs.
        i.cni.minimum_ip_target = Some(12);
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "secondary IPs"), 12);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 14);
        // 25 pods + 5 warm: capped at 3 x 9 = 27 secondaries, 30 IPs.
        i.pods_per_node = 25;
        i.cni.warm_ip_target = Some(5);
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "secondary IPs"), 27);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 30);
        assert!(r.vpc_cni.fits);
    }

    #[test]
    fn minimum_ip_target_alone_caps_pods() {
        let mut i = input("m5.large", 1, 8);
        i.cni.minimum_ip_target = Some(10);
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "secondary IPs"), 10);
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 12);
        assert!(r.vpc_cni.fits);
        i.pods_per_node = 11;
        let r = plan(&i).unwrap();
        assert!(!r.vpc_cni.fits);
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("only MINIMUM_IP_TARGET")));
    }

    #[test]
    fn prefix_mode_with_ip_targets() {
        let mut i = input("m5.large", 1, 20);
        i.cni.prefix_delegation = true;
        i.cni.warm_ip_target = Some(5);
        i.cni.minimum_ip_target = Some(40);
        // ceil(max(25, 40) / 16) = 3 prefixes.
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "/28 prefixes"), 3);
    }

    #[test]
    fn max_pods_caps_the_warm_pool() {
        // isDatastorePoolTooLow: no new ENI once the pool holds max pods.
        let mut i = input("m5.large", 1, 5);
        i.max_pods = Some(9);
        i.host_network_pods = 0;
        let r = plan(&i).unwrap();
        // WARM_ENI_TARGET=1 wants 2 ENIs; 9 IPs already reach max pods 9.
        assert_eq!(detail(&r.vpc_cni, "ENIs attached"), 1);
        assert!(r.vpc_cni.fits);
        i.max_pods = Some(10);
        assert_eq!(detail(&plan(&i).unwrap().vpc_cni, "ENIs attached"), 2);
        // WARM_IP_TARGET: the pool stops at max pods too.
        i.cni.warm_ip_target = Some(20);
        let r = plan(&i).unwrap();
        assert_eq!(detail(&r.vpc_cni, "secondary IPs"), 10);
        // --max-pods above what the type can address is flagged.
        i.max_pods = Some(40);
        let r = plan(&i).unwrap();
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("above what m5.large can address (29)")));
    }

    #[test]
    fn warm_eni_target_zero_holds_only_what_pods_use() {
        let mut i = input("m5.large", 1, 1);
        i.cni.warm_eni_target = Some(0);
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 10);
        assert!(r.warnings.iter().any(|w| w.contains("#2482")));
    }

    #[test]
    fn calculator_ceiling_applies_in_secondary_ip_mode() {
        // c5.4xlarge: 8 ENIs x 30 IPv4: 8 x 29 + 2 = 234 (the AMI's
        // eni-max-pods.txt value), 16 vCPUs <= 30: the calculator says 110.
        let r = plan(&input("c5.4xlarge", 1, 10)).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 110);
        assert!(
            r.vpc_cni.max_pods_per_node.rule.contains("= 234")
                && r.vpc_cni.max_pods_per_node.rule.contains("capped at 110"),
            "{}",
            r.vpc_cni.max_pods_per_node.rule
        );
        // m5.24xlarge: 15 x 49 + 2 = 737, 96 vCPUs > 30: 250.
        let r = plan(&input("m5.24xlarge", 1, 10)).unwrap();
        assert_eq!(r.vpc_cni.max_pods_per_node.value, 250);
        // m5.large: 3 x 9 + 2 = 29, under either ceiling; t3.small: 11.
        assert_eq!(
            plan(&input("m5.large", 1, 1))
                .unwrap()
                .vpc_cni
                .max_pods_per_node
                .value,
            29
        );
        assert_eq!(
            plan(&input("t3.small", 1, 1))
                .unwrap()
                .vpc_cni
                .max_pods_per_node
                .value,
            11
        );
        // Custom networking on m5.24xlarge: 14 x 49 + 2 = 688 -> 250; on
        // c5.4xlarge 7 x 29 + 2 = 205 -> 110.
        for (ty, want) in [("m5.24xlarge", 250), ("c5.4xlarge", 110)] {
            let mut i = input(ty, 1, 1);
            i.cni.custom_networking = true;
            i.pod_subnets = vec![net("100.64.0.0/16")];
            assert_eq!(
                plan(&i).unwrap().vpc_cni.max_pods_per_node.value,
                want,
                "{ty}"
            );
        }
        // A type whose vCPUs are unknown needs them only when the formula
        // exceeds 110: m5.metal (737) does, with a clear error.
        let e = plan(&input("m5.metal", 1, 1)).unwrap_err();
        assert!(
            matches!(e, ModelError::VcpusUnknown { raw: 737, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("--vcpus"), "{e}");
        let mut i = input("m5.metal", 1, 1);
        i.vcpus = Some(Vcpus {
            count: 96,
            source: VcpuSource::Flag,
        });
        assert_eq!(plan(&i).unwrap().vpc_cni.max_pods_per_node.value, 250);
    }

    #[test]
    fn overlay_max_pods_follows_the_calculator_and_the_node_subnet() {
        // m5.large (2 vCPUs): min(253 pod IPs of a /24, 110) = 110.
        let r = plan(&input("m5.large", 1, 20)).unwrap();
        assert_eq!(r.overlay.max_pods_per_node.value, 110);
        assert!(r.overlay.fits);
        // m5.24xlarge (96 vCPUs): min(253, 250) = 250; with a /23: min(509, 250).
        let mut i = input("m5.24xlarge", 1, 20);
        assert_eq!(plan(&i).unwrap().overlay.max_pods_per_node.value, 250);
        i.overlay.node_subnet_len = 23;
        assert_eq!(plan(&i).unwrap().overlay.max_pods_per_node.value, 250);
        // 200 pods + 2 on m5.large: over 110, the problem says how to fit.
        let r = plan(&input("m5.large", 1, 200)).unwrap();
        assert!(!r.overlay.fits);
        assert!(
            r.overlay.problems[0].contains("max pods 110")
                && r.overlay.problems[0].contains("--max-pods"),
            "{:?}",
            r.overlay.problems
        );
        // --max-pods 240 fits them; 300 is bounded by the /24 (253), warned.
        let mut i = input("m5.large", 1, 200);
        i.max_pods = Some(240);
        let r = plan(&i).unwrap();
        assert_eq!(r.overlay.max_pods_per_node.value, 240);
        assert!(r.overlay.fits);
        i.max_pods = Some(300);
        let r = plan(&i).unwrap();
        assert_eq!(r.overlay.max_pods_per_node.value, 253);
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("--max-pods 300 is above the 253")));
    }

    #[test]
    fn vpc_ips_saved_line() {
        // docs/PLAN.md's first example: 50 m5.large, 20 pods: VPC CNI 30
        // per node (27 secondaries + 3 primaries) = 1500; overlay 50.
        let mut i = input("m5.large", 50, 20);
        i.node_subnets = vec![net("10.0.0.0/24"), net("10.0.1.0/24")];
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_ips_saved.value, 1450);
        assert!(
            r.vpc_ips_saved.rule.contains("96.7%"),
            "{}",
            r.vpc_ips_saved.rule
        );
        // Custom networking: 1 node-subnet IP + ENIConfig IPs, all VPC IPs.
        let mut i = input("m5.large", 10, 20);
        i.cni.custom_networking = true;
        i.pod_subnets = vec![net("100.64.0.0/16")];
        let r = plan(&i).unwrap();
        // 2 pod ENIs (ceil(20/9) + 1 = 4, at most 2) x 10 + primary 1 = 21.
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 21);
        assert_eq!(r.vpc_ips_saved.value, 10 * 21 - 10);
    }

    #[test]
    fn pods_over_max_pods_does_not_fit() {
        let r = plan(&input("m5.large", 3, 30)).unwrap();
        assert!(!r.vpc_cni.fits);
        assert!(r.vpc_cni.problems.iter().any(|p| p.contains("max pods 29")));
        assert!(r.overlay.fits);
        // min(253 pod IPs, 110 for 2 vCPUs).
        assert_eq!(r.overlay.max_pods_per_node.value, 110);
    }

    #[test]
    fn cluster_fit_counts_subnet_by_subnet() {
        // Two /24 subnets: 251 usable each. 30 IPs per node (10 pods):
        // 8 nodes per subnet = 16, not floor(502/30) = 16 either way; use
        // 31-pod-ish sizes where it differs: 20 IPs per node -> 12 + 12 = 24
        // (aggregate would say 25).
        let mut i = input("m5.large", 24, 1);
        i.cni.warm_eni_target = Some(1);
        i.node_subnets = vec![net("10.0.1.0/24"), net("10.0.2.0/24")];
        let r = plan(&i).unwrap();
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 20);
        assert_eq!(r.vpc_cni.pools[0].usable_ips, 502);
        assert_eq!(r.vpc_cni.max_nodes.value, 24);
        assert!(r.vpc_cni.fits);
        assert_eq!(r.vpc_cni.node_headroom, 0);
        i.nodes = 25;
        let r = plan(&i).unwrap();
        assert!(!r.vpc_cni.fits);
        assert_eq!(r.vpc_cni.node_headroom, -1);
        assert!((r.vpc_cni.pools[0].percent_used - 99.6).abs() < 1e-9);
        // The overlay needs 25 IPs of 502.
        assert!(r.overlay.fits);
        assert_eq!(r.overlay.cluster_vpc_ips, 25);
        assert_eq!(r.overlay.max_nodes.value, 255);
    }

    #[test]
    fn overlay_nodes_bounded_by_cluster_cidr() {
        let mut i = input("m5.large", 300, 10);
        i.node_subnets = vec![net("10.0.0.0/16")];
        let r = plan(&i).unwrap();
        assert_eq!(r.overlay.max_nodes.value, 255);
        assert!(!r.overlay.fits);
        i.overlay.node_subnet_len = 25;
        let r = plan(&i).unwrap();
        assert_eq!(r.overlay.max_nodes.value, 511);
        // min(125 pod IPs of a /25, 110 for 2 vCPUs).
        assert_eq!(r.overlay.max_pods_per_node.value, 110);
        assert!(r.overlay.fits);
    }

    #[test]
    fn flannel_default_subnet_len() {
        assert_eq!(default_node_subnet_len(&net("10.244.0.0/16")), 24);
        assert_eq!(default_node_subnet_len(&net("10.244.0.0/22")), 24);
        assert_eq!(default_node_subnet_len(&net("10.244.0.0/23")), 25);
        assert_eq!(default_node_subnet_len(&net("10.244.0.0/28")), 30);
    }

    /// Consistency over the whole table: every type, several pod counts and
    /// each pooling mode. Catches arithmetic that only the hand cases miss.
    #[test]
    fn invariants_hold_for_every_type_and_mode() {
        let table = LimitsTable::embedded().unwrap();
        let mut checked = 0;
        for row in table.iter() {
            let per_eni = u64::from(row.ipv4_per_eni);
            let s = per_eni - 1;
            let enis = u64::from(row.max_enis);
            let mut modes: Vec<CniSettings> = vec![
                CniSettings::default(),
                CniSettings {
                    warm_eni_target: Some(2),
                    ..CniSettings::default()
                },
                CniSettings {
                    warm_ip_target: Some(3),
                    minimum_ip_target: Some(10),
                    ..CniSettings::default()
                },
                CniSettings {
                    minimum_ip_target: Some(7),
                    ..CniSettings::default()
                },
            ];
            if row.prefix_delegation_supported {
                modes.push(CniSettings {
                    prefix_delegation: true,
                    ..CniSettings::default()
                });
                modes.push(CniSettings {
                    prefix_delegation: true,
                    warm_ip_target: Some(5),
                    ..CniSettings::default()
                });
            }
            if row.max_enis >= 2 {
                modes.push(CniSettings {
                    custom_networking: true,
                    ..CniSettings::default()
                });
            }
            for cni in modes {
                for pods in [0u32, 1, 5, 17, 40, 120, 250] {
                    let i = PlanInput {
                        limits: row.clone(),
                        vcpus: Some(Vcpus {
                            count: 8,
                            source: VcpuSource::Flag,
                        }),
                        nodes: 3,
                        pods_per_node: pods,
                        host_network_pods: 2,
                        node_subnets: vec![net("10.0.0.0/16")],
                        pod_subnets: if cni.custom_networking {
                            vec![net("100.64.0.0/16")]
                        } else {
                            vec![]
                        },
                        vpc_cidrs: vec![],
                        cni: cni.clone(),
                        max_pods: None,
                        overlay: OverlaySettings {
                            cluster_cidr: net("10.244.0.0/16"),
                            node_subnet_len: 24,
                        },
                    };
                    let r = plan(&i).unwrap();
                    let v = &r.vpc_cni;
                    let ctx = format!("{} {pods} pods {cni:?}", row.instance_type);
                    let attached = detail(v, "ENIs attached");
                    assert!(attached >= 1 && attached <= enis, "{ctx}: {attached} ENIs");
                    let max_ips = if cni.prefix_delegation {
                        enis * (1 + s * PREFIX_IPS)
                    } else {
                        enis * per_eni
                    };
                    assert!(v.vpc_ips_per_node.value <= max_ips, "{ctx}");
                    assert_eq!(v.cluster_vpc_ips, 3 * v.vpc_ips_per_node.value, "{ctx}");
                    let held = v.vpc_ips_per_node.value - attached;
                    if v.fits {
                        // Every pod got an address, and kubelet admits them.
                        assert!(held >= u64::from(pods), "{ctx}: {held} held");
                        assert!(u64::from(pods) + 2 <= v.max_pods_per_node.value, "{ctx}");
                    }
                    assert!(
                        !v.fits || u64::from(pods) <= v.pod_ip_capacity_per_node.value,
                        "{ctx}"
                    );
                    assert_eq!(r.overlay.vpc_ips_per_node.value, 1);
                    checked += 1;
                }
            }
        }
        assert!(checked > 40_000, "{checked}");
    }

    #[test]
    fn pd_subnet_blocks() {
        // A /24 has 16 blocks, 14 free of reserved addresses.
        assert_eq!(pd_nodes_in_subnet(24, 1, 1), 14);
        assert_eq!(pd_nodes_in_subnet(24, 2, 1), 7);
        // A /28 can never hold a prefix.
        assert_eq!(pd_nodes_in_subnet(28, 1, 1), 0);
        // A /22 has 62 free blocks. Singles spill into blocks after the 27
        // spare addresses: 56 nodes: 56 + ceil((112 - 27) / 16) = 62 fits,
        // 57 nodes: 57 + ceil(87 / 16) = 63 does not.
        assert_eq!(pd_nodes_in_subnet(22, 1, 2), 56);
    }

    #[test]
    fn security_groups_for_pods() {
        let mut i = input("m5.large", 1, 10);
        i.cni.pod_eni = true;
        i.cni.sg_pods_per_node = 3;
        let r = plan(&i).unwrap();
        // 7 ordinary pods: ceil(7/9)+1 = 2 of the 2 non-trunk ENIs, 20 IPs;
        // + trunk primary 1 + 3 branch ENIs = 24.
        assert_eq!(r.vpc_cni.vpc_ips_per_node.value, 24);
        assert_eq!(r.vpc_cni.pod_ip_capacity_per_node.value, 18);
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("leaves 2 ENIs for ordinary pods")));
    }

    #[test]
    fn invalid_inputs_are_rejected_with_clear_errors() {
        let mut i = input("m5.large", 1, 1);
        i.cni.warm_prefix_target = Some(1);
        assert_eq!(plan(&i).unwrap_err(), ModelError::WarmPrefixWithoutPd);

        let mut i = input("m4.large", 1, 1);
        i.cni.prefix_delegation = true;
        assert!(matches!(plan(&i), Err(ModelError::PdUnsupported { .. })));

        let mut i = input("m5.metal", 1, 1);
        i.cni.prefix_delegation = true;
        assert!(matches!(plan(&i), Err(ModelError::VcpusUnknown { .. })));

        let mut i = input("m5.large", 1, 1);
        i.node_subnets = vec![net("10.0.0.0/15")];
        assert!(matches!(
            plan(&i),
            Err(ModelError::SubnetSize { len: 15, .. })
        ));
        i.node_subnets = vec![net("10.0.0.0/29")];
        assert!(matches!(
            plan(&i),
            Err(ModelError::SubnetSize { len: 29, .. })
        ));
        i.node_subnets = vec![net("10.0.0.0/16"), net("10.0.3.0/24")];
        assert!(matches!(plan(&i), Err(ModelError::Overlap { .. })));
        i.node_subnets = vec![];
        assert_eq!(plan(&i).unwrap_err(), ModelError::NoSubnets);

        let mut i = input("m5.large", 0, 1);
        assert!(matches!(plan(&i), Err(ModelError::Zero { .. })));
        i.nodes = 1;
        i.cni.custom_networking = true;
        assert_eq!(plan(&i).unwrap_err(), ModelError::CustomWithoutPodSubnets);
        i.cni.max_eni = Some(1);
        i.pod_subnets = vec![net("100.64.0.0/16")];
        assert!(matches!(plan(&i), Err(ModelError::NoPodEnis { .. })));

        let mut i = input("m5.large", 1, 1);
        i.overlay.node_subnet_len = 31;
        assert!(matches!(plan(&i), Err(ModelError::NodeSubnetLen { .. })));
        i.overlay.node_subnet_len = 17;
        assert!(matches!(plan(&i), Err(ModelError::NodeSubnetLen { .. })));

        let mut i = input("m5.large", 1, 2);
        i.cni.sg_pods_per_node = 1;
        assert_eq!(plan(&i).unwrap_err(), ModelError::SgPodsWithoutPodEni);

        let mut i = input("m5.large", 1, 2);
        i.cni.prefix_delegation = true;
        i.cni.warm_prefix_target = Some(0);
        assert_eq!(plan(&i).unwrap_err(), ModelError::PdZeroWarm);

        // More pods than the overlay's node subnet holds: refused, with the
        // prefix that fits (254 -> /23 holds 509; 600 -> /22 holds 1021).
        let i = input("m5.large", 1, 254);
        assert_eq!(
            plan(&i).unwrap_err(),
            ModelError::PodsOverNodeSubnet {
                pods: 254,
                len: 24,
                pod_ips: 253,
                fit: 23
            }
        );
        let mut i = input("m5.large", 1, 600);
        i.overlay.node_subnet_len = 20;
        assert!(plan(&i).is_ok());
        i.overlay.node_subnet_len = 24;
        let e = plan(&i).unwrap_err();
        assert!(e.to_string().contains("--node-subnet-len 22"), "{e}");
    }

    #[test]
    fn cluster_cidr_overlapping_the_vpc_is_an_error() {
        // 10.0.0.0/8 contains the node subnet 10.0.0.0/16.
        let mut i = input("m5.large", 1, 5);
        i.overlay.cluster_cidr = net("10.0.0.0/8");
        let e = plan(&i).unwrap_err();
        assert_eq!(
            e,
            ModelError::ClusterCidrOverlapsVpc {
                cidr: net("10.0.0.0/8"),
                what: "subnet",
                subnet: net("10.0.0.0/16")
            }
        );
        assert!(e.to_string().contains("outside the VPC"), "{e}");
        // Inside a custom-networking pod subnet too.
        let mut i = input("m5.large", 1, 5);
        i.cni.custom_networking = true;
        i.pod_subnets = vec![net("100.64.0.0/16")];
        i.overlay.cluster_cidr = net("100.64.0.0/16");
        assert!(matches!(
            plan(&i),
            Err(ModelError::ClusterCidrOverlapsVpc { .. })
        ));
        // With --vpc-cidr: a range in the VPC but in no listed subnet is
        // still refused, and subnets must lie in the VPC.
        let mut i = input("m5.large", 1, 5);
        i.node_subnets = vec![net("10.0.0.0/24")];
        i.vpc_cidrs = vec![net("10.0.0.0/16")];
        i.overlay.cluster_cidr = net("10.0.128.0/17");
        assert!(matches!(
            plan(&i),
            Err(ModelError::ClusterCidrOverlapsVpc { what: "CIDR", .. })
        ));
        i.overlay.cluster_cidr = net("10.244.0.0/16");
        assert!(plan(&i).is_ok());
        i.node_subnets = vec![net("10.1.0.0/24")];
        assert!(matches!(plan(&i), Err(ModelError::SubnetOutsideVpc { .. })));
    }

    #[test]
    fn warnings_for_small_warm_ip_target() {
        let mut i = input("m5.large", 100, 5);
        i.cni.warm_ip_target = Some(2);
        let r = plan(&i).unwrap();
        assert!(
            r.warnings.iter().any(|w| w.contains("throttling")),
            "{:?}",
            r.warnings
        );
    }
}
