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

/// `flannel-rs --version` from a shell: name, release and the CNI versions,
/// like the reference plugins print; `--help` too. With CNI_COMMAND set,
/// arguments are ignored: the CNI protocol is unchanged.
#[test]
fn version_and_help_flags_answer_without_breaking_the_protocol() {
    use std::io::Write;
    use std::process::Stdio;
    let run = |args: &[&str], cni_command: Option<&str>, stdin: &[u8]| {
        let mut cmd = Command::new(PLUGIN);
        cmd.env_clear().args(args);
        if let Some(c) = cni_command {
            cmd.env("CNI_COMMAND", c);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run flannel-rs");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait")
    };
    let expected = format!(
        "CNI flannel-rs plugin v{}\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n",
        env!("CARGO_PKG_VERSION")
    );
    for flag in ["--version", "-V", "version"] {
        let out = run(&[flag], None, b"");
        assert!(out.status.success(), "{flag}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{flag}");
    }
    let out = run(&["--help"], None, b"");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.starts_with(&expected) && help.contains("CNI_COMMAND"),
        "{help}"
    );

    let out = run(&["--frobnicate"], None, b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--frobnicate"),
        "{out:?}"
    );

    // A runtime's VERSION call is answered in JSON whatever argv holds.
    let out = run(
        &["--version"],
        Some("VERSION"),
        br#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("VERSION answers JSON");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(5));
    // And no argument, no CNI_COMMAND, a config on stdin: the error JSON
    // naming CNI_COMMAND, as before.
    let out = run(&[], None, br#"{"cniVersion":"1.0.0"}"#);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CNI_COMMAND"),
        "{out:?}"
    );
}
