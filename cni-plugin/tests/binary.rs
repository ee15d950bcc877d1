//! The `flannel-rs` binary is linked static-pie (see build.rs): no program
//! interpreter and no shared library to load at each exec. Needs readelf
//! (binutils), not root.

use std::process::Command;

const PLUGIN: &str = env!("CARGO_BIN_EXE_flannel-rs");

fn readelf(args: &[&str]) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(PLUGIN)
        .output()
        .expect("run readelf (apt-get install binutils)");
    assert!(out.status.success(), "readelf {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plugin_binary_is_static_pie() {
    let segments = readelf(&["-W", "-l"]);
    let dynamic = readelf(&["-W", "-d"]);
    if std::env::var("FLANNEL_RS_DYNAMIC").as_deref() == Ok("1") {
        // Opted out at build time: the ordinary dynamic binary.
        assert!(segments.contains("INTERP"), "{segments}");
        return;
    }
    assert!(
        !segments.contains("INTERP"),
        "flannel-rs has a program interpreter (dynamically linked); see the cargo:warning from cni-plugin/build.rs: {segments}"
    );
    assert!(!dynamic.contains("(NEEDED)"), "{dynamic}");
    // Position independent (ASLR kept): a PIE is of type DYN.
    assert!(readelf(&["-h"]).contains("DYN"), "not a PIE");
    // And it runs.
    let out = Command::new(PLUGIN)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run flannel-rs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("supportedVersions"), "{out:?}");
}
