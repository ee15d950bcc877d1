//! Checks of the measurement flags shared by `probe client` and `compare`:
//! durations like `3s`, `500ms`, `1m`, and counts that must be positive.
//! Errors name the flag.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("{flag} {value:?} is not a duration: use e.g. 3s, 500ms or 1m")]
    BadDuration { flag: String, value: String },
    #[error("{flag} must be more than 0")]
    Zero { flag: String },
    #[error("{flag} {value} is too large: at most {max}")]
    TooLarge { flag: String, value: u64, max: u64 },
    #[error("{flag} {value} is too small: at least {min}")]
    TooSmall { flag: String, value: u64, min: u64 },
}

/// Parses `3s`, `2.5s`, `500ms`, `1m`, or a bare number of seconds; refuses
/// zero (a test of no length measures nothing).
pub fn parse_duration(flag: &str, value: &str) -> Result<Duration, ArgError> {
    let bad = || ArgError::BadDuration {
        flag: flag.to_string(),
        value: value.to_string(),
    };
    let v = value.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let x: f64 = num.parse().map_err(|_| bad())?;
    if !x.is_finite() || x < 0.0 || x * scale > 86_400.0 {
        return Err(bad());
    }
    let d = Duration::from_secs_f64(x * scale);
    if d.is_zero() {
        return Err(ArgError::Zero {
            flag: flag.to_string(),
        });
    }
    Ok(d)
}

/// Checks `min <= value <= max`, naming `flag`.
pub fn check_range(flag: &str, value: u64, min: u64, max: u64) -> Result<(), ArgError> {
    if value == 0 && min > 0 {
        return Err(ArgError::Zero {
            flag: flag.to_string(),
        });
    }
    if value < min {
        return Err(ArgError::TooSmall {
            flag: flag.to_string(),
            value,
            min,
        });
    }
    if value > max {
        return Err(ArgError::TooLarge {
            flag: flag.to_string(),
            value,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration("--duration", s);
        assert_eq!(d("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(d("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(d("4"), Ok(Duration::from_secs(4)));
        for bad in ["", "s", "abc", "-1s", "1h", "NaNs", "1e9s"] {
            let e = d(bad).unwrap_err().to_string();
            assert!(
                e.contains("--duration") && e.contains("not a duration"),
                "{bad}: {e}"
            );
        }
        for zero in ["0", "0s", "0ms"] {
            let e = d(zero).unwrap_err().to_string();
            assert_eq!(e, "--duration must be more than 0");
        }
    }

    #[test]
    fn ranges_name_the_flag() {
        assert!(check_range("--streams", 4, 1, 64).is_ok());
        assert_eq!(
            check_range("--streams", 0, 1, 64).unwrap_err().to_string(),
            "--streams must be more than 0"
        );
        assert!(check_range("--streams", 65, 1, 64)
            .unwrap_err()
            .to_string()
            .contains("--streams 65 is too large"));
        assert!(check_range("--size", 4, 16, 9000)
            .unwrap_err()
            .to_string()
            .contains("--size 4 is too small: at least 16"));
    }
}
