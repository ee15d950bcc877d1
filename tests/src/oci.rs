//! A single-layer OCI image archive built locally (busybox rootfs, tar,
//! sha256sum, hand-written config/manifest/index), for `ctr images import`,
//! since no registry can be reached.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use testkit::cmd::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("building the OCI image: {0}")]
    Cmd(#[from] CmdError),
    #[error("OCI image file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sha256sum printed no digest for {0}")]
    NoDigest(PathBuf),
}

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// A content-addressed blob: `sha256:<hex>` and its size in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

pub fn config_json(layer_diff_id: &str) -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_diff_id]},
    })
}

pub fn manifest_json(config: &Blob, layer: &Blob) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size}],
    })
}

/// The index names the image twice: containerd reads
/// `io.containerd.image.name`, other tools the OCI `ref.name`.
pub fn index_json(manifest: &Blob, image: &str) -> Value {
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {
                "io.containerd.image.name": image,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    })
}

fn sha256_of(path: &Path) -> Result<Blob, OciError> {
    let out = cmd::run(Command::new("sha256sum").arg(path))?;
    let hex = out
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| OciError::NoDigest(path.to_path_buf()))?;
    let size = std::fs::metadata(path)
        .map_err(|source| OciError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size,
    })
}

/// Moves `file` into `blobs/sha256/` under its digest.
fn store_blob(layout: &Path, file: &Path) -> Result<Blob, OciError> {
    let blob = sha256_of(file)?;
    let hex = blob.digest.trim_start_matches("sha256:");
    let dest = layout.join("blobs/sha256").join(hex);
    std::fs::rename(file, &dest).map_err(|source| OciError::Io { path: dest, source })?;
    Ok(blob)
}

fn write(path: &Path, v: &Value) -> Result<(), OciError> {
    std::fs::write(path, v.to_string()).map_err(|source| OciError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds `<work>/image.tar`: an OCI image layout holding a busybox rootfs,
/// tagged `image` (e.g. `localhost/fct-busybox:latest`).
pub fn busybox_archive(work: &Path, image: &str) -> Result<PathBuf, OciError> {
    let rootfs = work.join("oci-rootfs");
    let layout = work.join("oci-layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| OciError::Io {
        path: blobs.clone(),
        source,
    })?;
    crate::rootfs::busybox_rootfs(&rootfs)?;

    let layer_tar = work.join("layer.tar");
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer_tar)
            .arg("."),
    )?;
    // Uncompressed layer: its digest is also its diff_id.
    let layer = store_blob(&layout, &layer_tar)?;
    let config_file = work.join("config.json");
    write(&config_file, &config_json(&layer.digest))?;
    let config = store_blob(&layout, &config_file)?;
    let manifest_file = work.join("manifest.json");
    write(&manifest_file, &manifest_json(&config, &layer))?;
    let manifest = store_blob(&layout, &manifest_file)?;
    write(&layout.join("index.json"), &index_json(&manifest, image))?;
    write(
        &layout.join("oci-layout"),
        &json!({"imageLayoutVersion": "1.0.0"}),
    )?;

    let archive = work.join("image.tar");
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    )?;
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_link_by_digest() {
        let layer = Blob {
            digest: "sha256:aa".into(),
            size: 10,
        };
        let config = Blob {
            digest: "sha256:bb".into(),
            size: 5,
        };
        let m = manifest_json(&config, &layer);
        assert_eq!(m["config"]["digest"], "sha256:bb");
        assert_eq!(m["layers"][0]["size"], 10);
        assert_eq!(
            config_json("sha256:aa")["rootfs"]["diff_ids"][0],
            "sha256:aa"
        );
        let i = index_json(&config, "localhost/x:v1");
        let ann = &i["manifests"][0]["annotations"];
        assert_eq!(ann["io.containerd.image.name"], "localhost/x:v1");
        assert_eq!(ann["org.opencontainers.image.ref.name"], "v1");
    }

    #[test]
    fn archive_blobs_match_their_digests() {
        let dir = testkit::temp::temp_dir("oci-unit").unwrap();
        let archive = busybox_archive(dir.path(), "localhost/fct-busybox:latest").unwrap();
        assert!(archive.is_file());
        let layout = dir.path().join("oci-layout");
        let index: Value =
            serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap())
                .unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let path = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        assert_eq!(sha256_of(&path).unwrap().digest, digest);
    }
}
