//! vCPU counts for the prefix-delegation max-pods cap (110 if vCPUs <= 30,
//! else 250). The limits table has no vCPU column, so we either take
//! `--vcpus` or estimate from the size part of the type name.
//!
//! The estimate is the usual EC2 sizing: `large` = 2 vCPUs, `xlarge` = 4,
//! `Nxlarge` = 4N, `metal-Nxl` = 4N; `medium` = 1 (2 on burstable t*), and
//! `nano`/`micro`/`small` = 2 on t3/t3a/t4g, 1 otherwise. Families that break
//! that rule (hpc*, which disable SMT; previous-generation c1/m1/m2/cc2/cr1/
//! hs1) and plain `metal` sizes (12 to 448 vCPUs) get no estimate: the caller
//! must pass `--vcpus`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VcpuSource {
    /// Given with `--vcpus`.
    Flag,
    /// Derived from the size name (see module docs).
    EstimatedFromSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Vcpus {
    pub count: u32,
    pub source: VcpuSource,
}

const IRREGULAR_FAMILIES: [&str; 6] = ["c1", "m1", "m2", "cc2", "cr1", "hs1"];

/// Estimates the vCPUs of `instance_type`, or `None` where the size name
/// does not tell (see module docs).
pub fn estimate(instance_type: &str) -> Option<Vcpus> {
    let (family, size) = instance_type.split_once('.')?;
    if family.starts_with("hpc") || IRREGULAR_FAMILIES.contains(&family) {
        return None;
    }
    let burstable = family.starts_with('t');
    let count = match size {
        "nano" | "micro" | "small" => {
            if burstable && family != "t2" {
                2
            } else {
                1
            }
        }
        "medium" => {
            if burstable {
                2
            } else {
                1
            }
        }
        "large" => 2,
        "xlarge" => 4,
        _ => {
            let multiple = size
                .strip_suffix("xlarge")
                .or_else(|| size.strip_prefix("metal-")?.strip_suffix("xl"))?;
            multiple.parse::<u32>().ok()?.checked_mul(4)?
        }
    };
    Some(Vcpus {
        count,
        source: VcpuSource::EstimatedFromSize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(name: &str) -> Option<u32> {
        estimate(name).map(|v| v.count)
    }

    #[test]
    fn common_sizes() {
        assert_eq!(count("m5.large"), Some(2));
        assert_eq!(count("m5.xlarge"), Some(4));
        assert_eq!(count("c5.4xlarge"), Some(16));
        assert_eq!(count("c5.9xlarge"), Some(36));
        assert_eq!(count("m5.24xlarge"), Some(96));
        assert_eq!(count("m7i.metal-48xl"), Some(192));
        assert_eq!(count("t3.medium"), Some(2));
        assert_eq!(count("m6g.medium"), Some(1));
        assert_eq!(count("t3.small"), Some(2));
        assert_eq!(count("t2.micro"), Some(1));
    }

    #[test]
    fn irregular_types_need_the_flag() {
        assert_eq!(count("m5.metal"), None);
        assert_eq!(count("a1.metal"), None);
        assert_eq!(count("hpc7a.12xlarge"), None);
        assert_eq!(count("hs1.8xlarge"), None);
        assert_eq!(count("c1.medium"), None);
        assert_eq!(count("garbage"), None);
        assert_eq!(count("m5.hugexlarge"), None);
    }

    #[test]
    fn every_embedded_type_either_estimates_or_is_listed_irregular() {
        // Guards the table against a new size spelling silently getting no
        // estimate: only the documented exceptions may return None.
        let table = super::super::limits::LimitsTable::embedded().unwrap();
        for row in table.iter() {
            let name = &row.instance_type;
            if estimate(name).is_none() {
                let (family, size) = name.split_once('.').unwrap();
                assert!(
                    size == "metal"
                        || family.starts_with("hpc")
                        || IRREGULAR_FAMILIES.contains(&family),
                    "{name} has no estimate"
                );
            }
        }
    }
}
