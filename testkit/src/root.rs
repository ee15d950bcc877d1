//! The root check. Kernel and runtime tests need root and fail loudly
//! without it ([`require_root`], [`assert_root`]); they never pass by
//! skipping. [`is_root`] is for the few tests whose documented behaviour is
//! to check something else when not root.

#[derive(Debug, thiserror::Error)]
#[error(
    "{what} needs root (creates network namespaces, bridges, containers): \
     run it as root, e.g. `sudo -E cargo test --workspace`"
)]
pub struct NotRoot {
    pub what: String,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns an error naming `what` when not running as root.
pub fn require_root(what: &str) -> Result<(), NotRoot> {
    if is_root() {
        Ok(())
    } else {
        Err(NotRoot {
            what: what.to_string(),
        })
    }
}

/// [`require_root`] for test bodies: panics with the message.
pub fn assert_root(what: &str) {
    if let Err(e) = require_root(what) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_test_and_the_fix() {
        let msg = NotRoot {
            what: "podman test".into(),
        }
        .to_string();
        assert!(msg.starts_with("podman test needs root"), "{msg}");
        assert!(msg.contains("sudo"), "{msg}");
    }

    #[test]
    fn require_root_agrees_with_is_root() {
        assert_eq!(require_root("x").is_ok(), is_root());
    }
}
