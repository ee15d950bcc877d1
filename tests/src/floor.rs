//! The kernel floor of a CNI ADD: `bench/cni-floor.c`, a C program that
//! does only the kernel work of a bridge attachment (veth pair with its
//! peer made in the pod namespace, bridge port, pod address and routes,
//! and a host-local style reservation file) and nothing else. `cni-bench
//! --floor` times it against the reference plugins, which bounds from
//! below what any plugin building this datapath can reach on the machine
//! (docs/PERFORMANCE.md, "The kernel floor"). Compiled here at run time,
//! linked like flannel-rs (static-pie), so no build step is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::cmd::{self, CmdError};

/// The program's source, carried in the binary so it can be built anywhere.
pub const SOURCE: &str = include_str!("../bench/cni-floor.c");

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "compiling the kernel floor program failed (needs cc and libc6-dev's static libc.a): {0}"
    )]
    Compile(#[source] CmdError),
}

/// Writes the source into `dir` and compiles it there; returns the binary.
pub fn build(dir: &Path) -> Result<PathBuf, FloorError> {
    let src = dir.join("cni-floor.c");
    let bin = dir.join("cni-floor");
    std::fs::write(&src, SOURCE).map_err(|source| FloorError::Write {
        path: src.clone(),
        source,
    })?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    cmd::run(
        Command::new(cc)
            .args(["-O2", "-Wall", "-static-pie", "-o"])
            .arg(&bin)
            .arg(&src),
    )
    .map_err(FloorError::Compile)?;
    Ok(bin)
}
