//! `flannel-rs`: a CNI plugin. Config on stdin, CNI_* in the environment,
//! result or error JSON on stdout; diagnostics only on stderr.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("flannel-rs: cannot read stdin: {e}");
        stdin.clear();
    }
    // Plain `flannel-rs` from a shell: say what this is instead of an error JSON.
    if std::env::var_os("CNI_COMMAND").is_none() && stdin.is_empty() {
        eprintln!("flannel-rs: a CNI plugin; run it from a container runtime (CNI_COMMAND unset)");
    }
    let get = |k: &str| std::env::var(k).ok();
    let out = cni_plugin::commands::run(&stdin, &get);
    if !out.success {
        // The runtime reads the error from stdout; stderr is for the node's logs.
        let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
        let id = std::env::var("CNI_CONTAINERID").unwrap_or_default();
        eprintln!("flannel-rs: {cmd} {id} failed: {}", out.stdout);
    }
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    if out.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
