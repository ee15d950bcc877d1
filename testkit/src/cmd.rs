//! Running external commands (ip, podman, CNI plugins) with errors that say
//! which command failed and what it printed.

use std::io::Write;
use std::process::{Command, Output, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("could not start `{cmd}`: {source} (is it installed? see scripts/setup.sh)")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write stdin of `{cmd}`: {source}")]
    Stdin {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}):\nstdout: {stdout}\nstderr: {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
}

/// The command line as a human would type it, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion, feeding `stdin` if given, and returns its output.
/// Does not look at the exit status.
pub fn output_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, CmdError> {
    let name = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| CmdError::Spawn {
        cmd: name.clone(),
        source,
    })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe after the write closes it, so the child sees EOF.
        pipe.write_all(data).map_err(|source| CmdError::Stdin {
            cmd: name.clone(),
            source,
        })?;
    }
    child
        .wait_with_output()
        .map_err(|source| CmdError::Spawn { cmd: name, source })
}

/// Runs `cmd` and fails unless it exits 0. Returns stdout as text.
pub fn run(cmd: &mut Command) -> Result<String, CmdError> {
    run_with_stdin(cmd, None)
}

/// Like [`run`], feeding `stdin` to the command.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, CmdError> {
    let out = output_with_stdin(cmd, stdin)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(CmdError::Failed {
            cmd: describe(cmd),
            status: out.status,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_and_reports_failures() {
        let out = run(Command::new("sh").args(["-c", "echo hi"])).unwrap();
        assert_eq!(out, "hi\n");
        let err = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("oops") && msg.contains("sh -c"), "{msg}");
    }

    #[test]
    fn stdin_is_fed_and_closed() {
        let out = run_with_stdin(&mut Command::new("cat"), Some(b"abc")).unwrap();
        assert_eq!(out, "abc");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/fct-no-such-binary")).unwrap_err();
        assert!(matches!(err, CmdError::Spawn { .. }), "{err}");
    }
}
