//! `flannel-rs`: a CNI plugin. Config on stdin, CNI_* in the environment,
//! result or error JSON on stdout; diagnostics only on stderr.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use cni_plugin::version::{about, usage, CommandLine};

fn main() -> ExitCode {
    // Runtimes always set CNI_COMMAND and pass no arguments: only without it
    // is the command line looked at, so no CNI call can change meaning.
    if std::env::var_os("CNI_COMMAND").is_none() {
        let arg = std::env::args_os().nth(1);
        let arg = arg.as_ref().map(|a| a.to_string_lossy());
        match CommandLine::parse(arg.as_deref()) {
            CommandLine::Version => return print(&about()),
            CommandLine::Help => return print(&usage()),
            CommandLine::Unknown(a) => {
                eprintln!("flannel-rs: unknown argument {a:?}; try --version or --help");
                return ExitCode::from(2);
            }
            CommandLine::Cni if std::io::stdin().is_terminal() => {
                // From a shell with nothing piped in: reading stdin would
                // just wait. Say what this is, as the reference plugins do.
                eprint!("{}", about());
                eprintln!("flannel-rs: a CNI plugin; run it from a container runtime (CNI_COMMAND unset; see --help)");
                return ExitCode::FAILURE;
            }
            CommandLine::Cni => {}
        }
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("flannel-rs: cannot read stdin: {e}");
        stdin.clear();
    }
    // Plain `flannel-rs < /dev/null`: say what this is besides the error JSON.
    if std::env::var_os("CNI_COMMAND").is_none() && stdin.is_empty() {
        eprint!("{}", about());
        eprintln!("flannel-rs: a CNI plugin; run it from a container runtime (CNI_COMMAND unset; see --help)");
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

fn print(text: &str) -> ExitCode {
    let mut so = std::io::stdout().lock();
    match so.write_all(text.as_bytes()).and_then(|()| so.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // e.g. a closed pipe: the caller did not get the answer.
        Err(_) => ExitCode::FAILURE,
    }
}
