//! Temporary directories for test state (runtime roots, CNI data dirs,
//! subnet.env), removed on drop.

#[derive(Debug, thiserror::Error)]
#[error("could not create a temporary directory under {base}: {source} (is the disk full?)")]
pub struct TempError {
    pub base: String,
    #[source]
    pub source: std::io::Error,
}

/// A fresh directory `/tmp/fct-<what>-XXXX`, deleted with everything in it
/// when the returned guard drops.
pub fn temp_dir(what: &str) -> Result<tempfile::TempDir, TempError> {
    let base = std::env::temp_dir();
    tempfile::Builder::new()
        .prefix(&format!("{}{what}-", crate::names::PREFIX))
        .tempdir_in(&base)
        .map_err(|source| TempError {
            base: base.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dir_is_prefixed_and_removed() {
        let dir = temp_dir("unit").unwrap();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("fct-unit-"), "{name}");
        drop(dir);
        assert!(!path.exists());
    }
}
