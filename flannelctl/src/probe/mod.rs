//! `flannelctl probe server|client`: latency (UDP and TCP request/response
//! histograms), TCP throughput with 1 and N streams, and CPU per Gbit
//! between two endpoints, in a lab or a real cluster (see docs/COMPARE.md).
//! std threads and sockets only: the measurement must not wait on a runtime.

pub mod args;
pub mod client;
pub mod cpu;
pub mod hist;
pub mod report;
pub mod server;
pub mod wire;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use args::ArgError;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Arg(#[from] ArgError),
    #[error("{flag} {value:?}: {why}")]
    BadAddress {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot listen on {addr} ({proto}): {source}; pick another --listen port or stop what uses it")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to the probe server {server} within {secs:.1} s: {source}; is `flannelctl probe server` running there, and are TCP and UDP to that port allowed?")]
    Connect {
        server: SocketAddr,
        secs: f64,
        #[source]
        source: std::io::Error,
    },
    #[error("{server} did not answer like a flannelctl probe server (it said {reply:?}); check --server, and that both ends run the same flannelctl version")]
    Protocol { server: SocketAddr, reply: String },
    #[error("{what} with {server}: {source}")]
    Io {
        what: &'static str,
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no UDP reply from {server} to {sent} requests (timeout {timeout_ms} ms each) although TCP works: is UDP to that port blocked (NetworkPolicy, security group, firewall)?")]
    NoUdpReply {
        server: SocketAddr,
        sent: u64,
        timeout_ms: u64,
    },
    #[error("the server {server} counted {counted} bytes of the {sent} sent: the stream was cut short; run again")]
    Mismatch {
        server: SocketAddr,
        sent: u64,
        counted: u64,
    },
    #[error("a {0} thread panicked")]
    Thread(&'static str),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {why}")]
    Report { path: PathBuf, why: String },
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(subcommand)]
    command: ProbeCommand,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// Serve the probe: TCP echo/sink and UDP echo on one port, until killed.
    Server(ServerArgs),
    /// Measure against a probe server and print a table (or JSON).
    Client(ClientArgs),
    /// One table from saved client reports (JSON files, or Job logs ending
    /// in one), with ratios to the first: e.g. native.log overlay.log.
    Report {
        /// Reports; each row is labelled with its file name without extension.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Address and port for TCP and UDP (e.g. 0.0.0.0:7100, [::]:7100).
    #[arg(long, default_value = "0.0.0.0:7100")]
    listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    /// The table, then the JSON (for logs that people and scripts read).
    Both,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The server, IP:PORT or NAME:PORT (e.g. a headless Service).
    #[arg(long)]
    server: String,
    /// Length of each of the four tests (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    duration: String,
    /// Parallel TCP streams for the N-stream throughput test (1-64).
    #[arg(long, default_value_t = 4)]
    streams: u32,
    /// Request/response message size in bytes (16-65000).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Print only the JSON report (schema flannelctl-probe/1).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The row label in the table (e.g. overlay, native).
    #[arg(long, default_value = "this path")]
    label: String,
    /// Keep retrying the first connection this long (the server may still
    /// be starting).
    #[arg(long, default_value = "10s")]
    connect_timeout: String,
    /// A UDP request without a reply after this counts as lost.
    #[arg(long, default_value = "200ms")]
    udp_timeout: String,
}

/// Parses `--listen`: a literal socket address.
pub fn parse_listen(value: &str) -> Result<SocketAddr, ProbeError> {
    value.parse().map_err(|_| ProbeError::BadAddress {
        flag: "--listen",
        value: value.to_string(),
        why: "not an IP:PORT address (e.g. 0.0.0.0:7100 or [::]:7100)".into(),
    })
}

/// Parses `--server`: IP:PORT, or NAME:PORT resolved now (first address).
pub fn parse_server(value: &str) -> Result<SocketAddr, ProbeError> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        return check_port(value, a);
    }
    let bad = |why: String| ProbeError::BadAddress {
        flag: "--server",
        value: value.to_string(),
        why,
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("no port: use IP:PORT, e.g. 10.244.1.5:7100".into()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad("not IP:PORT or NAME:PORT (e.g. 10.244.1.5:7100)".into()));
    }
    let addr = value
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("{host} resolves to no address")))?;
    check_port(value, addr)
}

fn check_port(value: &str, a: SocketAddr) -> Result<SocketAddr, ProbeError> {
    if a.port() == 0 {
        return Err(ProbeError::BadAddress {
            flag: "--server",
            value: value.to_string(),
            why: "port 0 is not a server port".into(),
        });
    }
    Ok(a)
}

/// The last probe report in `text`: a JSON file, or a log whose JSON line
/// follows the table (`--format both`).
pub fn extract_report(text: &str) -> Result<report::ProbeReport, String> {
    let mut last_err = None;
    for line in text
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
    {
        match serde_json::from_str::<report::ProbeReport>(line) {
            Ok(r) => return Ok(r),
            Err(e) => last_err = Some(e),
        }
    }
    match serde_json::from_str::<report::ProbeReport>(text.trim()) {
        Ok(r) => Ok(r),
        Err(e) => Err(match last_err {
            Some(l) => format!("its JSON line is not a {} report: {l}", report::SCHEMA),
            None => format!(
                "no {} report in it (run the client with --json or --format both): {e}",
                report::SCHEMA
            ),
        }),
    }
}

fn print_reports(files: &[PathBuf]) -> Result<(), ProbeError> {
    let mut loaded = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| ProbeError::Report {
            path: path.clone(),
            why: format!("cannot read: {e}"),
        })?;
        let r = extract_report(&text).map_err(|why| ProbeError::Report {
            path: path.clone(),
            why,
        })?;
        let label = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        loaded.push((label, report::PathSummary::of(&r), r));
    }
    for (label, _, r) in &loaded {
        println!(
            "{label}: server {}, {} B messages, {} s per test, {} CPUs",
            r.server, r.size, r.duration_s, r.cpus
        );
    }
    println!();
    let rows: Vec<report::Row> = loaded
        .iter()
        .map(|(label, s, _)| report::Row {
            label,
            result: Ok(s),
        })
        .collect();
    let base = (loaded.len() > 1).then(|| loaded[0].0.as_str());
    print!("{}", report::render_table(&rows, base));
    Ok(())
}

/// Validated client settings from the flags.
fn client_options(a: &ClientArgs) -> Result<client::ClientOptions, ProbeError> {
    let duration = args::parse_duration("--duration", &a.duration)?;
    args::check_range("--streams", u64::from(a.streams), 1, 64)?;
    args::check_range(
        "--size",
        a.size as u64,
        wire::UDP_HEADER as u64,
        server::MAX_SIZE as u64,
    )?;
    let connect_timeout = args::parse_duration("--connect-timeout", &a.connect_timeout)?;
    let udp_timeout = args::parse_duration("--udp-timeout", &a.udp_timeout)?;
    Ok(client::ClientOptions {
        server: parse_server(&a.server)?,
        duration,
        streams: a.streams,
        size: a.size,
        connect_timeout,
        udp_timeout,
    })
}

pub fn run(a: &ProbeArgs) -> Result<ExitCode, ProbeError> {
    match &a.command {
        ProbeCommand::Server(s) => {
            let srv = server::Server::bind(parse_listen(&s.listen)?)?;
            eprintln!(
                "flannelctl probe server: listening on {} (TCP and UDP)",
                srv.local_addr()?
            );
            srv.serve()?;
            Ok(ExitCode::SUCCESS)
        }
        ProbeCommand::Report { files } => {
            print_reports(files)?;
            Ok(ExitCode::SUCCESS)
        }
        ProbeCommand::Client(c) => {
            let o = client_options(c)?;
            let format = if c.json { Format::Json } else { c.format };
            if format != Format::Json {
                eprintln!(
                    "flannelctl probe client: measuring {} for about {:.0} s",
                    o.server,
                    4.0 * o.duration.as_secs_f64()
                );
            }
            let r = client::run(&o)?;
            let summary = report::PathSummary::of(&r);
            if format != Format::Json {
                println!(
                    "probe to {}: {} B messages, {} s per test, {} CPUs\n",
                    r.server, r.size, r.duration_s, r.cpus
                );
                let rows = [report::Row {
                    label: &c.label,
                    result: Ok(&summary),
                }];
                print!("{}", report::render_table(&rows, None));
            }
            if format != Format::Table {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn client(extra: &[&str]) -> Result<client::ClientOptions, ProbeError> {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            c: ClientArgs,
        }
        let mut argv = vec!["t", "--server", "127.0.0.1:7100"];
        argv.extend(extra);
        let t = <T as clap::Parser>::try_parse_from(argv).map_err(|e| ProbeError::BadAddress {
            flag: "argv",
            value: String::new(),
            why: e.to_string(),
        })?;
        client_options(&t.c)
    }

    #[test]
    fn flags_are_validated_naming_the_flag() {
        let o = client(&[]).unwrap();
        assert_eq!(o.duration, Duration::from_secs(5));
        assert_eq!((o.streams, o.size), (4, 64));
        let msg = |extra: &[&str]| client(extra).unwrap_err().to_string();
        assert_eq!(msg(&["--duration", "0s"]), "--duration must be more than 0");
        assert!(msg(&["--duration", "fast"]).contains("--duration \"fast\" is not a duration"));
        assert_eq!(msg(&["--streams", "0"]), "--streams must be more than 0");
        assert!(msg(&["--size", "8"]).contains("--size 8 is too small"));
        assert!(msg(&["--udp-timeout", "0ms"]).contains("--udp-timeout"));
    }

    #[test]
    fn reports_are_found_in_logs() {
        let r = crate::compare::test_round();
        let json = serde_json::to_string(&r).unwrap();
        let log = format!("probe to x\n\nLatency ...\n{{not json\n{json}\n");
        assert_eq!(extract_report(&log).unwrap(), r);
        assert_eq!(
            extract_report(&serde_json::to_string_pretty(&r).unwrap()).unwrap(),
            r
        );
        let e = extract_report("just a table\n").unwrap_err();
        assert!(e.contains("--format both"), "{e}");
        let e = extract_report("{\"schema\": 1}\n").unwrap_err();
        assert!(e.contains("not a flannelctl-probe/1 report"), "{e}");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_server("10.244.1.5:7100").unwrap(),
            "10.244.1.5:7100".parse().unwrap()
        );
        assert_eq!(parse_server("localhost:7100").unwrap().port(), 7100);
        for (bad, why) in [
            ("10.244.1.5", "no port"),
            ("10.244.1.5:0", "port 0"),
            (":7100", "not IP:PORT"),
            ("10.244.1.5:http", "not IP:PORT"),
            ("no-such-host.invalid:7100", "cannot resolve"),
        ] {
            let e = parse_server(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--server \"{bad}\"")) && e.contains(why),
                "{e}"
            );
        }
        assert!(parse_listen("0.0.0.0:7100").is_ok());
        let e = parse_listen("7100").unwrap_err().to_string();
        assert!(e.contains("--listen") && e.contains("IP:PORT"), "{e}");
    }
}
