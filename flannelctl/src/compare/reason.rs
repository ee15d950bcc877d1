//! The one-line reason a datapath is unavailable, taken from what the lab
//! reported: the daemon's last error line when it exited during start-up,
//! else the lab's own error.

use crate::lab::daemon::DaemonError;
use crate::lab::LabError;

/// Removes ANSI colour sequences (ESC [ ... letter) that log formatters add.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The most telling line of a daemon log tail: the last one at ERROR level
/// (or mentioning an error), without timestamp and level; else the last
/// non-empty line.
pub fn from_log(tail: &str) -> Option<String> {
    let lines: Vec<String> = tail
        .lines()
        .map(strip_ansi)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .rev()
        .find(|l| l.split_whitespace().any(|w| w == "ERROR"))
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| l.to_ascii_lowercase().contains("error"))
        })
        .or_else(|| lines.last())?;
    let mut words: Vec<&str> = pick.split_whitespace().collect();
    // tracing's text format: `<RFC 3339 time> <LEVEL> <target>: <message>`.
    if words
        .first()
        .is_some_and(|w| w.len() > 18 && w.contains('T') && w.contains(':'))
    {
        words.remove(0);
    }
    if words
        .first()
        .is_some_and(|w| ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(w))
    {
        words.remove(0);
    }
    // The target: a Rust module path such as `flanneld_rs:` or `a::b:`.
    let is_target = |w: &str| {
        w.len() > 1
            && w.ends_with(':')
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if words.first().is_some_and(|w| is_target(w)) {
        words.remove(0);
    }
    Some(words.join(" "))
}

/// Why `lab up` for a datapath failed, in one line.
pub fn from_lab_error(e: &LabError) -> String {
    let daemon_line = match e {
        LabError::Daemon(DaemonError::Died { tail, .. }) => from_log(tail),
        LabError::Daemon(DaemonError::NotReady { tail, why, .. }) => {
            Some(from_log(tail).map_or(why.clone(), |l| format!("not ready ({why}): {l}")))
        }
        _ => None,
    };
    daemon_line.unwrap_or_else(|| e.to_string().lines().next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_line_without_decoration() {
        let tail = "2026-11-22T13:00:00.123456Z  INFO flanneld_rs: starting\n\
            \u{1b}[2m2026-11-22T13:00:00.2Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m flanneld_rs: cannot create geneve device flannel-gnv: the kernel has no geneve module\n\
            2026-11-22T13:00:00.3Z  INFO flanneld_rs: exiting\n";
        assert_eq!(
            from_log(tail).unwrap(),
            "cannot create geneve device flannel-gnv: the kernel has no geneve module"
        );
        assert_eq!(
            from_log("flanneld-rs: error: Backend.Type \"x\" is unknown\n\n").unwrap(),
            "flanneld-rs: error: Backend.Type \"x\" is unknown"
        );
        assert_eq!(from_log("just this\n").unwrap(), "just this");
        assert_eq!(from_log("\n \n"), None);
    }

    #[test]
    fn lab_errors_become_one_line() {
        let died = LabError::Daemon(DaemonError::Died {
            node: 1,
            log: "/x/flanneld.log".into(),
            tail: "ERROR flanneld_rs: no geneve module\n".into(),
        });
        assert_eq!(from_lab_error(&died), "no geneve module");
        let usage = LabError::Usage("--backend geneve is not one of vxlan, host-gw".into());
        assert_eq!(
            from_lab_error(&usage),
            "--backend geneve is not one of vxlan, host-gw"
        );
    }
}
