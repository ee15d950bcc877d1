//! Links the `flannel-rs` binary statically (static-pie) on glibc targets.
//!
//! The runtime execs the plugin for every ADD, DEL and VERSION, and a
//! dynamically linked start (loading libgcc_s and libc, relocating, about
//! 35 more page faults) costs about 0.7 ms of CPU of a 4 ms ADD here.
//! `-C target-feature=+crt-static` would do it but can only be set for the
//! whole workspace (RUSTFLAGS or .cargo/config.toml), and the daemon must
//! stay dynamic (glibc's resolver and NSS need it). A build script can only
//! add link arguments for one binary, and rustc still asks for
//! `-Bdynamic -lgcc_s ... -lc`; so this points those names at small linker
//! scripts in OUT_DIR that name the static archives instead, exactly the
//! libraries rustc links with crt-static. The library and the test
//! binaries are not affected.
//!
//! Skipped (dynamic binary, as before) when a static archive is missing
//! (no libc6-dev static parts), on non-glibc targets, when crt-static is
//! already on, or with FLANNEL_RS_DYNAMIC=1.
//! `tests/binary.rs` checks that the binary has no interpreter and no
//! shared-library dependency.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Libraries rustc names for std on linux-gnu, besides libgcc_s and libc.
const SYSTEM_LIBS: [&str; 5] = ["util", "rt", "pthread", "m", "dl"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FLANNEL_RS_DYNAMIC");
    if let Err(why) = static_link() {
        println!("cargo:warning=flannel-rs stays dynamically linked: {why}");
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

fn static_link() -> Result<(), String> {
    if env("FLANNEL_RS_DYNAMIC") == "1" {
        return Err("FLANNEL_RS_DYNAMIC=1".into());
    }
    if env("CARGO_CFG_TARGET_OS") != "linux" || env("CARGO_CFG_TARGET_ENV") != "gnu" {
        return Ok(()); // musl is static already; other systems are not ours.
    }
    if env("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static")
    {
        return Ok(()); // rustc links statically by itself.
    }
    let cc = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let archive = |name: &str| -> Result<PathBuf, String> {
        let out = Command::new(&cc)
            .arg(format!("-print-file-name={name}"))
            .output()
            .map_err(|e| format!("cannot run {cc}: {e}"))?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        // cc echoes the bare name when it finds no such file.
        if path.is_absolute() && path.is_file() {
            Ok(path)
        } else {
            Err(format!("{cc} finds no {name} (install libc6-dev)"))
        }
    };
    let gcc_eh = archive("libgcc_eh.a")?;
    let gcc = archive("libgcc.a")?;
    let libc = archive("libc.a")?;

    let dir = PathBuf::from(env("OUT_DIR")).join("static-libs");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = |lib: &str, text: String| -> Result<(), String> {
        let path = dir.join(format!("lib{lib}.so"));
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let p = |a: &Path| a.display().to_string();
    script("gcc_s", format!("INPUT({} {})\n", p(&gcc_eh), p(&gcc)))?;
    script(
        "c",
        format!("GROUP({} {} {})\n", p(&libc), p(&gcc_eh), p(&gcc)),
    )?;
    for lib in SYSTEM_LIBS {
        script(
            lib,
            format!("INPUT({})\n", p(&archive(&format!("lib{lib}.a"))?)),
        )?;
    }
    // -L options apply to every -l whatever their position, searched in
    // command-line order: these come before the system directories.
    println!("cargo:rustc-link-arg-bin=flannel-rs=-L{}", dir.display());
    println!("cargo:rustc-link-arg-bin=flannel-rs=-static-pie");
    Ok(())
}
