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
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
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

async fn run(settings: Settings) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    metrics.ops.set_ipam_dir(settings.ipam_dir.clone());
    let readiness = Arc::new(Readiness::default());

    let stop = stop_signal()?;

    let app = flanneld::http::router(readiness.clone(), metrics.clone());
    if let Some(addr) = settings.healthz_addr {
        let bound = flanneld::http::spawn(addr, app.clone())
            .await
            .map_err(|e| e.to_string())?;
        info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    }
    if let Some(addr) = settings.metrics_addr {
        let bound = flanneld::http::spawn(addr, app)
            .await
            .map_err(|e| e.to_string())?;
        info!(addr = %bound, "serving /metrics");
    }

    let work = async {
        // The interface flags are checked now; the addresses are chosen
        // once the config says which family the tunnels use.
        let kernel = wiring::connect_kernel().map_err(|e| e.to_string())?;
        flanneld::node::netlink::preflight_any(
            &*kernel,
            &settings.iface,
            &settings.iface_fallbacks,
        )
        .await
        .map_err(|e| e.to_string())?;
        let net_conf = wiring::read_net_conf(settings.net_config_path.as_deref())
            .map_err(|e| e.to_string())?;
        let store = wiring::open_store(
            &settings.store,
            settings.lease_ttl,
            net_conf.as_deref(),
            Some(&metrics),
        )
        .await
        .map_err(|e| e.to_string())?;
        let config = daemon::load_config(settings.net_config_path.as_deref(), &store)
            .await
            .map_err(|e| e.to_string())?;
        // After the config: the Backend's underlay family decides which
        // addresses the node needs.
        let underlay = flanneld::backend::underlay_of(&config, &settings.datapath)
            .map_err(|e| e.to_string())?;
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
        .await
        .map_err(|e| e.to_string())?;
        let backend = wiring::make_backend_with_mac_file(
            &config,
            kernel.clone(),
            &settings.datapath,
            &settings.vtep_mac_file,
        )
        .map_err(|e| e.to_string())?;
        let masq = wiring::masquerade(settings.ip_masq)
            .await
            .map_err(|e| e.to_string())?;
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
            .await
            .map_err(|e| e.to_string())
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
            ExitCode::FAILURE
        }
    }
}
