//! Where the lab finds the project's binaries: `--bin-dir`, else the
//! directory of the running `flannelctl` (cargo builds every workspace
//! binary into the same target directory).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error("cannot find the running flannelctl executable: {0}; pass --bin-dir")]
    CurrentExe(#[source] std::io::Error),
    #[error("{bin} not found in {dir}: build it with `cargo build -p {package}` (same profile and CARGO_TARGET_DIR as flannelctl) or pass --bin-dir DIR")]
    Missing {
        bin: String,
        package: String,
        dir: PathBuf,
    },
}

pub fn bin_dir(flag: Option<&Path>) -> Result<PathBuf, BinError> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    let exe = std::env::current_exe().map_err(BinError::CurrentExe)?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Fails naming the cargo command when `dir/bin` is missing.
pub fn require(dir: &Path, bin: &str, package: &str) -> Result<PathBuf, BinError> {
    let path = dir.join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BinError::Missing {
            bin: bin.to_string(),
            package: package.to_string(),
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_build_command() {
        let err = require(Path::new("/nonexistent"), "flanneld-rs", "flanneld-rs").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cargo build -p flanneld-rs"), "{msg}");
        assert_eq!(bin_dir(Some(Path::new("/x"))).unwrap(), PathBuf::from("/x"));
    }
}
