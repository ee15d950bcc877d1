//! `flanneld-rs`: parse the flags, set up logging, detect the node, open the
//! store, pick the backend, serve health and metrics, and run the lease loop
//! until SIGTERM or SIGINT, which exit 0 and leave the datapath, subnet.env
//! and the lease in place.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use flanneld::cli::{Cli, LogFormat, Settings};
use flanneld::daemon::{self, wiring, LeaseLoop, LoopSettings, Metrics, Parts, Readiness};
use tracing::{error, info, warn};

fn init_logging(format: LogFormat, verbosity: Option<u32>) {
    // RUST_LOG wins; else Go's `-v=N`, else info.
    let fallback = verbosity.map_or("info", flanneld::go_flags::level_for);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(fallback));
    // Colour only for a person at a terminal: a file, journald or a
    // container log would keep the escape codes as garbage.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Installs the SIGTERM and SIGINT handlers now (so a signal during a slow
/// start-up is handled, not fatal) and returns a future resolving on the
/// first of them.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, Fatal> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| signal(kind).map_err(Fatal::Signals);
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            "stopping; the datapath, subnet.env and lease stay in place"
        );
    })
}

/// Why the daemon stopped before its time: each part's own error, kept
/// typed up to here, where it becomes the log line and the exit code.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Http(#[from] flanneld::http::BindError),
    #[error(transparent)]
    Wiring(#[from] wiring::WiringError),
    #[error(transparent)]
    Detect(#[from] flanneld::node::DetectError),
    #[error(transparent)]
    Backend(#[from] flanneld::backend::BackendError),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

impl Fatal {
    /// Every start-up or run failure exits 1 (flag errors exit 2 before
    /// this point, like Go flanneld); the message says which part failed.
    fn exit_code(&self) -> ExitCode {
        match self {
            Fatal::Signals(_)
            | Fatal::Http(_)
            | Fatal::Wiring(_)
            | Fatal::Detect(_)
            | Fatal::Backend(_)
            | Fatal::Daemon(_) => ExitCode::FAILURE,
        }
    }
}

async fn run(settings: Settings) -> Result<(), Fatal> {
    let metrics = Arc::new(Metrics::new());
    metrics.ops.set_ipam_dir(settings.ipam_dir.clone());
    let readiness = Arc::new(Readiness::default());

    let stop = stop_signal()?;

    let app = flanneld::http::router(readiness.clone(), metrics.clone());
    if let Some(addr) = settings.healthz_addr {
        let bound = flanneld::http::spawn(addr, app.clone()).await?;
        info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    }
    if let Some(addr) = settings.metrics_addr {
        let bound = flanneld::http::spawn(addr, app).await?;
        info!(addr = %bound, "serving /metrics");
    }

    let work = async {
        // The interface flags are checked now; the addresses are chosen
        // once the config says which family the tunnels use.
        let kernel = wiring::connect_kernel()?;
        flanneld::node::netlink::preflight_any(
            &*kernel,
            &settings.iface,
            &settings.iface_fallbacks,
        )
        .await?;
        // net-conf.json is read once: the store (Kubernetes mode) and the
        // config below use the same text.
        let net_conf = wiring::read_net_conf(settings.net_config_path.as_deref())?;
        let store = wiring::open_store(
            &settings.store,
            settings.lease_ttl,
            net_conf.as_deref(),
            Some(&metrics),
        )
        .await?;
        let file = settings.net_config_path.as_deref().zip(net_conf.as_deref());
        let config = daemon::load_config(file, &store).await?;
        // After the config: the Backend's underlay family decides which
        // addresses the node needs.
        let underlay = flanneld::backend::underlay_of(&config, &settings.datapath)?;
        let public = flanneld::node::PublicAddrs {
            v4: settings.public_ip,
            v6: settings.public_ipv6,
        };
        let node = flanneld::node::netlink::detect_any(
            &*kernel,
            &settings.iface,
            &settings.iface_fallbacks,
            public,
            underlay,
        )
        .await?;
        let backend = wiring::make_backend_with_mac_file(
            &config,
            kernel.clone(),
            &settings.datapath,
            &settings.vtep_mac_file,
        )?;
        let masq = wiring::masquerade(settings.ip_masq).await?;
        let loop_settings = LoopSettings {
            subnet_file: settings.subnet_file.clone(),
            ip_masq: settings.ip_masq,
            renew_margin: settings.renew_margin,
            resync_period: settings.resync_period,
            kernel_events: true,
        };
        let parts = Parts {
            config,
            store,
            backend,
            masq,
            node,
        };
        // A node taken over from Go flanneld: its iptables chains go once
        // ours are in place, unless the operator keeps them to switch back.
        let go_chains = (!settings.keep_go_iptables).then(flanneld::masq::go_chains::GoChains::new);
        LeaseLoop::new(loop_settings, parts, metrics, readiness)
            .with_kernel(kernel)
            .with_go_chains(go_chains)
            .run(std::future::pending())
            .await?;
        Ok::<(), Fatal>(())
    };
    let result = tokio::select! {
        r = work => r,
        _ = stop => Ok(()),
    };
    result
}

fn main() -> ExitCode {
    // Go flanneld's flag forms (`-iface eth0`, `-v=2`, its retired flags)
    // first, so an existing unit file or DaemonSet starts this daemon.
    let go = flanneld::go_flags::normalize(std::env::args_os(), |k| std::env::var(k).ok());
    let cli = Cli::parse_from(go.args.clone());
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flanneld-rs: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.log_format, go.verbosity);
    for w in &go.warnings {
        warn!("{w}");
    }
    if let Some(v) = &go.bad_verbosity {
        warn!("-v={v} is not a number; ignored (klog verbosity is 0-10; RUST_LOG sets the level)");
    }
    // One thread: the daemon waits on the store and netlink most of the
    // time, and a small footprint matters on every node of a cluster.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flanneld-rs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            e.exit_code()
        }
    }
}
