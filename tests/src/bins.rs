//! Locating the workspace's built binaries (e.g. the `flannel-rs` CNI plugin)
//! from another package's tests or bins.
//!
//! `env!("CARGO_BIN_EXE_<name>")` only exists for bins of the same package,
//! so instead: the running executable lives in `<target>/<profile>/` (bins)
//! or `<target>/<profile>/deps/` (tests), which gives the target directory
//! and profile that `cargo test -p e2e` used, whatever `CARGO_TARGET_DIR` is.
//! The binary is then (re)built there with `cargo build -p <package> --bin
//! <bin>` (a no-op of well under a second when fresh), so a test never runs a
//! stale plugin. `FCT_BIN_<BIN>` (e.g. `FCT_BIN_FLANNEL_RS=/path`) overrides
//! the lookup and skips the build, e.g. for an installed binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use testkit::cmd::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("cannot find the running executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error("the running executable {0} is not inside a cargo target directory")]
    NotInTarget(PathBuf),
    #[error("building {bin} failed: {source}")]
    Build {
        bin: String,
        #[source]
        source: CmdError,
    },
    #[error("{path} does not exist after building; check the [[bin]] name of package {package}")]
    Missing { path: PathBuf, package: String },
    #[error("{var}={path} does not exist")]
    BadOverride { var: String, path: PathBuf },
}

/// The environment variable that overrides the location of `bin`.
pub fn override_var(bin: &str) -> String {
    format!("FCT_BIN_{}", bin.to_uppercase().replace('-', "_"))
}

/// `<target>/<profile>` for an executable path: strips the file name and a
/// trailing `deps` directory.
pub fn profile_dir_of(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    if dir.file_name()? == "deps" {
        Some(dir.parent()?.to_path_buf())
    } else {
        Some(dir.to_path_buf())
    }
}

fn cargo_program() -> String {
    std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_string))
        .unwrap_or_else(|| "cargo".to_string())
}

fn workspace_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml")
}

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Path of binary `bin` of workspace package `package`, built in the same
/// target directory and profile as the running executable.
pub fn cargo_bin(package: &str, bin: &str) -> Result<PathBuf, BinError> {
    let var = override_var(bin);
    if let Some(path) = std::env::var_os(&var).map(PathBuf::from) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(BinError::BadOverride { var, path })
        };
    }
    // One build per process even with tests on parallel threads; a poisoned
    // lock only means another test panicked, the map is still usable.
    let mut guard = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = guard.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(bin) {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(BinError::CurrentExe)?;
    let profile_dir = profile_dir_of(&exe).ok_or_else(|| BinError::NotInTarget(exe.clone()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| BinError::NotInTarget(exe.clone()))?;
    let mut build = Command::new(cargo_program());
    build
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--manifest-path",
        ])
        .arg(workspace_manifest())
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    cmd::run(&mut build).map_err(|source| BinError::Build {
        bin: bin.to_string(),
        source,
    })?;
    let path = profile_dir.join(bin);
    if !path.is_file() {
        return Err(BinError::Missing {
            path,
            package: package.to_string(),
        });
    }
    built.insert(bin.to_string(), path.clone());
    Ok(path)
}

/// The `flannel-rs` CNI plugin of this workspace.
pub fn flannel_rs() -> Result<PathBuf, BinError> {
    cargo_bin("cni-plugin", "flannel-rs")
}

/// Directory of Debian's reference CNI plugins (containernetworking-plugins).
pub use testkit::cni::REFERENCE_PLUGIN_DIR;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_handles_tests_and_bins() {
        assert_eq!(
            profile_dir_of(Path::new("/t/debug/deps/cni_runtime-abc")),
            Some(PathBuf::from("/t/debug"))
        );
        assert_eq!(
            profile_dir_of(Path::new("/t/release/cni-bench")),
            Some(PathBuf::from("/t/release"))
        );
    }

    #[test]
    fn override_var_is_shell_friendly() {
        assert_eq!(override_var("flannel-rs"), "FCT_BIN_FLANNEL_RS");
    }
}
