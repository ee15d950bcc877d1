//! Latency statistics for benchmarks: median and nearest-rank percentiles,
//! and the plain-text table the benchmarks print.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; None when
/// empty. With 50 samples p99 is the largest one.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median as the mean of the two middle samples for an even count.
pub fn median(samples: &[Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[d(3), d(1), d(2)]), Some(d(2)));
        assert_eq!(
            median(&[d(4), d(1), d(2), d(3)]),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn percentile_nearest_rank() {
        let s: Vec<Duration> = (1..=50).map(d).collect();
        assert_eq!(percentile(&s, 99.0), Some(d(50)));
        assert_eq!(percentile(&s, 50.0), Some(d(25)));
        assert_eq!(percentile(&s, 0.0), Some(d(1)));
        let s: Vec<Duration> = (1..=200).rev().map(d).collect();
        assert_eq!(percentile(&s, 99.0), Some(d(198)));
        assert_eq!(percentile(&[], 99.0), None);
    }
}
