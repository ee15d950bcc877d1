//! Latency histogram: log-bucketed with 128 linear sub-buckets per power of
//! two, so any recorded value is reported within 1/256 (0.4 %) of its true
//! value, in a few kilobytes whatever the sample count. Histograms from
//! several runs merge by adding counts, which is how `compare` pools rounds.
//!
//! Percentiles use the nearest-rank definition: the p-th percentile of n
//! samples is the smallest recorded value v such that at least p % of the
//! samples are <= v (rank ceil(p/100 * n), 1-based). p0 is the minimum and
//! p100 the maximum, both exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bucket index -> samples in it; only non-empty buckets. Values below
    /// 128 ns have a bucket each; above, bucket 128*(s+1)+(m-128) holds the
    /// values whose top 8 bits are m after a right shift by s.
    pub buckets: BTreeMap<u32, u64>,
    pub count: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub sum_ns: u64,
}

/// The bucket a value falls into.
fn index(v: u64) -> u32 {
    if v < SUB {
        return v as u32;
    }
    let top = 63 - v.leading_zeros();
    let shift = top - SUB_BITS;
    let m = v >> shift;
    // At most 128 + 56*128 + 127: fits in u32.
    (SUB + u64::from(shift) * SUB + (m - SUB)) as u32
}

/// The smallest and largest value of bucket `i`.
fn bounds(i: u32) -> (u64, u64) {
    let i = u64::from(i);
    if i < SUB {
        return (i, i);
    }
    let shift = (i - SUB) / SUB;
    let m = SUB + (i - SUB) % SUB;
    let lo = u128::from(m) << shift;
    let hi = (u128::from(m + 1) << shift) - 1;
    (
        u64::try_from(lo).unwrap_or(u64::MAX),
        u64::try_from(hi).unwrap_or(u64::MAX),
    )
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, ns: u64) {
        *self.buckets.entry(index(ns)).or_insert(0) += 1;
        if self.count == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds `other`'s samples to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        for (i, c) in &other.buckets {
            *self.buckets.entry(*i).or_insert(0) += c;
        }
        if self.count == 0 || other.min_ns < self.min_ns {
            self.min_ns = other.min_ns;
        }
        self.max_ns = self.max_ns.max(other.max_ns);
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// The nearest-rank `p`-th percentile (0 <= p <= 100) in ns; None when
    /// empty. Reported as the middle of the sample's bucket, clamped to the
    /// exact minimum and maximum.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        if p <= 0.0 {
            return Some(self.min_ns);
        }
        if p >= 100.0 {
            return Some(self.max_ns);
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(*i);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min_ns, self.max_ns));
            }
        }
        Some(self.max_ns)
    }

    pub fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = None;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 1, u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            let (lo, hi) = bounds(i);
            assert!(lo <= v && v <= hi, "{v} not in bucket {i} [{lo}, {hi}]");
            // Width bounds the relative error at 1/128 of the lower end.
            assert!((hi - lo) as f64 <= lo as f64 / 128.0 + 1.0, "{v}");
            if let Some(p) = prev {
                if v < 5000 {
                    assert!(i == p || i == p + 1, "gap after {v}");
                }
            }
            prev = Some(i);
        }
    }

    #[test]
    fn nearest_rank_on_exact_small_values() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(90.0), Some(90));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(99.9), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.5), Some(1));
        assert_eq!(h.mean_ns(), Some(50.5));
        assert_eq!(Histogram::new().percentile(50.0), None);
    }

    #[test]
    fn large_values_stay_within_the_error_bound() {
        // 1000 samples from 10 us to 10 ms, spread geometrically.
        let mut h = Histogram::new();
        let mut exact = Vec::new();
        for k in 0..1000u32 {
            let v = (10_000.0 * 1000f64.powf(f64::from(k) / 999.0)) as u64;
            h.record(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for p in [1.0, 50.0, 90.0, 99.0, 99.9] {
            let rank = ((p / 100.0) * exact.len() as f64).ceil() as usize;
            let truth = exact[rank - 1] as f64;
            let got = h.percentile(p).unwrap() as f64;
            assert!(
                (got - truth).abs() / truth <= 1.0 / 256.0 + 1e-9,
                "p{p}: {got} vs {truth}"
            );
        }
        assert_eq!(h.min_ns, exact[0]);
        assert_eq!(h.max_ns, exact[999]);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in [5u64, 700, 90_000, 1_234_567] {
            a.record(v);
            all.record(v);
        }
        for v in [3u64, 800, 2_000_000] {
            b.record(v);
            all.record(v);
        }
        let mut m = Histogram::new();
        m.merge(&a);
        m.merge(&b);
        m.merge(&Histogram::new());
        assert_eq!(m, all);
        assert_eq!(m.min_ns, 3);
        assert_eq!(m.max_ns, 2_000_000);
        // Survives its JSON form.
        let back: Histogram = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
