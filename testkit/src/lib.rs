//! Test scaffolding shared by the tests of every crate in the workspace
//! (a dev-dependency; never part of a shipped binary). Each module has one
//! job:
//!
//! | module | for |
//! |---|---|
//! | [`netns`] | [`Netns`] guard (`fct-...`, deleted on drop, also on panic), [`in_netns`], [`netns::command_in`]: the one `setns`; [`netns::linked_pair`]: two namespaces on a veth |
//! | [`root`] | [`require_root`] / [`assert_root`]: kernel tests fail loudly without root, never skip |
//! | [`names`] | unique names (`fct-<what>-<pid>-<n>`) and interface names that fit IFNAMSIZ |
//! | [`temp`] | temp dirs `/tmp/fct-<what>-...`, removed on drop |
//! | [`cmd`] | running `ip`, `nft`, ... with errors that show the command and its output |
//! | [`wait`] | [`wait_for`] / [`wait::try_wait_for`] / [`wait::until`]: poll with a deadline and a clear timeout |
//! | [`daemon`] | [`Daemon`]: a process with a log file, SIGTERM with a deadline, SIGKILL on drop |
//! | [`etcd`] | [`etcd::EtcdProcess`]: a real etcd on free loopback ports (restartable, TLS), [`etcd::TestPki`] |
//! | [`http`] | GET on 127.0.0.1 inside a namespace (health and metrics endpoints) |
//! | [`cni`] | calling a CNI plugin as a runtime does: typed ([`cni::invoke`]) or raw ([`cni::run_raw`]) |
//! | [`procs`] | finding and stopping stray processes by command line |
//!
//! It depends on no crate of the workspace: the binaries under test come in
//! as paths (`env!("CARGO_BIN_EXE_...")` in the crate that builds them), so
//! any crate can use it without a dependency cycle. End-to-end harnesses
//! (the lab, Kubernetes, containerd, podman) stay in the `e2e` crate.

pub mod cmd;
pub mod cni;
pub mod daemon;
pub mod etcd;
pub mod http;
pub mod names;
pub mod netns;
pub mod procs;
pub mod root;
pub mod temp;
pub mod wait;

pub use daemon::Daemon;
pub use netns::{in_netns, Netns};
pub use root::{assert_root, is_root, require_root};
pub use temp::temp_dir;
pub use wait::wait_for;
