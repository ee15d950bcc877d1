//! The CNI specification versions this plugin speaks, and how the version
//! of a request is chosen (`cniVersion`, else the best of `cniVersions`).

use crate::error::{code, CniError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

pub const SUPPORTED: [Version; 5] = [
    Version::V0_3_0,
    Version::V0_3_1,
    Version::V0_4_0,
    Version::V1_0_0,
    Version::V1_1_0,
];

/// Answer errors in this version when the request named none we know.
pub const NEWEST: Version = Version::V1_1_0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("cniVersion {0:?} is not supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)")]
    Unsupported(String),
    #[error(
        "none of cniVersions {0:?} is supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"
    )]
    NoneSupported(Vec<String>),
}

impl From<VersionError> for CniError {
    fn from(e: VersionError) -> Self {
        CniError::new(code::INCOMPATIBLE_VERSION, e.to_string())
    }
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| VersionError::Unsupported(s.chars().take(40).collect()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// 0.3.x and 0.4.0 results carry `ips[].version`; 1.0+ dropped it.
    pub fn has_ip_version_field(self) -> bool {
        self < Version::V1_0_0
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version::V0_4_0
    }
}

/// Picks the request's version. An explicit `cniVersion` wins (the runtime
/// has chosen); otherwise the newest supported entry of `cniVersions`; a
/// config with neither is treated as 0.3.0, as libcni does.
pub fn select(
    cni_version: Option<&str>,
    cni_versions: Option<&[String]>,
) -> Result<Version, VersionError> {
    match (cni_version, cni_versions) {
        (Some(v), _) if !v.is_empty() => Version::parse(v),
        (_, Some(list)) if !list.is_empty() => list
            .iter()
            .filter_map(|v| Version::parse(v).ok())
            .max()
            .ok_or_else(|| VersionError::NoneSupported(list.iter().take(8).cloned().collect())),
        _ => Ok(Version::V0_3_0),
    }
}

/// The VERSION command's answer.
pub fn version_info(asked: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

/// What `flannel-rs --version` prints: the plugin's name and release and
/// the specification versions, in the reference plugins' two-line form
/// ("CNI bridge plugin v1.4.0" / "CNI protocol versions supported: ...")
/// so that tools and people reading those find the same lines here.
pub fn about() -> String {
    let versions: Vec<&str> = SUPPORTED.iter().map(|v| v.as_str()).collect();
    format!(
        "CNI flannel-rs plugin v{}\nCNI protocol versions supported: {}\n",
        env!("CARGO_PKG_VERSION"),
        versions.join(", ")
    )
}

/// What the command line asks for when the plugin is not run by a
/// container runtime (CNI_COMMAND unset). Runtimes pass no arguments, and
/// with CNI_COMMAND set arguments are ignored, so this never changes a
/// CNI call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// No argument: the CNI protocol (stdin, CNI_* variables).
    Cni,
    /// `--version`, `-V` or `version`.
    Version,
    /// `--help`, `-h` or `help`.
    Help,
    /// Anything else: refused, naming the argument.
    Unknown(String),
}

impl CommandLine {
    pub fn parse(first_arg: Option<&str>) -> CommandLine {
        match first_arg {
            None => CommandLine::Cni,
            Some("--version" | "-V" | "version") => CommandLine::Version,
            Some("--help" | "-h" | "help") => CommandLine::Help,
            Some(other) => CommandLine::Unknown(other.chars().take(80).collect()),
        }
    }
}

/// `flannel-rs --help`.
pub fn usage() -> String {
    format!(
        "{}\nA CNI plugin: the container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, \
         GC, STATUS, VERSION) and the other CNI_* variables set and the network \
         configuration on stdin; it answers with JSON on stdout.\n\n\
         Usage from a shell:\n  flannel-rs --version   name, version, CNI versions supported\n  \
         flannel-rs --help      this text\n  \
         echo '{{\"cniVersion\":\"1.1.0\"}}' | CNI_COMMAND=VERSION flannel-rs\n",
        about().trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_names_the_plugin_its_release_and_every_supported_version() {
        let a = about();
        let mut lines = a.lines();
        assert_eq!(
            lines.next(),
            Some(format!("CNI flannel-rs plugin v{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(
            lines.next(),
            Some("CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")
        );
        assert_eq!(lines.next(), None);
        assert!(usage().starts_with(&a));
    }

    #[test]
    fn command_line_words() {
        assert_eq!(CommandLine::parse(None), CommandLine::Cni);
        for v in ["--version", "-V", "version"] {
            assert_eq!(CommandLine::parse(Some(v)), CommandLine::Version);
        }
        for h in ["--help", "-h", "help"] {
            assert_eq!(CommandLine::parse(Some(h)), CommandLine::Help);
        }
        assert_eq!(
            CommandLine::parse(Some("--verbose")),
            CommandLine::Unknown("--verbose".into())
        );
    }

    #[test]
    fn parse_and_select() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()).unwrap(), v);
        }
        assert!(Version::parse("0.2.0").is_err());
        assert!(Version::parse("2.0.0").is_err());
        let list = vec!["0.4.0".to_string(), "1.1.0".into(), "9.9.9".into()];
        assert_eq!(select(None, Some(&list)).unwrap(), Version::V1_1_0);
        assert_eq!(select(Some("1.0.0"), Some(&list)).unwrap(), Version::V1_0_0);
        assert_eq!(select(None, None).unwrap(), Version::V0_3_0);
        let bad = vec!["9.9.9".to_string()];
        assert!(matches!(
            select(None, Some(&bad)),
            Err(VersionError::NoneSupported(_))
        ));
        let e: CniError = select(Some("0.1.0"), None).unwrap_err().into();
        assert_eq!(e.code, 1);
    }

    #[test]
    fn version_output() {
        let v = version_info("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    }
}
