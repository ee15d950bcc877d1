//! The daemon proper: the lease loop (`run`) and what it keeps up to date:
//! the peer set, the renewal schedule, readiness and metrics.

pub mod health;
pub mod logs;
pub mod metrics;
pub mod ops_metrics;
pub mod peers;
pub mod renew;
pub mod run;
pub mod validate;
pub mod wiring;

pub use health::Readiness;
pub use metrics::Metrics;
pub use run::{load_config, DaemonError, LeaseLoop, LoopSettings, Parts};
