//! A real etcd (Debian's `/usr/bin/etcd`) on free loopback ports with a
//! throwaway data dir, killed on Drop (also when the test panics), and a
//! throwaway PKI made with the `openssl` CLI for TLS tests. Used by the
//! lease store's etcd tests and the daemon's.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("etcd did not become ready within {secs} s; its log ({log}) ends with:\n{tail}")]
    NotReady {
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("etcd exited early ({status}); its log ({log}) ends with:\n{tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("openssl {step} failed: {stderr}")]
    Openssl { step: String, stderr: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EtcdError {
    let what = what.into();
    move |source| EtcdError::Io { what, source }
}

/// Server-side TLS for the test etcd.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// A running etcd, killed (and its data dir removed) on Drop.
pub struct EtcdProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
    starts: u32,
}

const ETCD: &str = "/usr/bin/etcd";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Two free loopback ports (held until both are chosen, so they differ).
fn free_ports() -> Result<(u16, u16), EtcdError> {
    let a = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    let b = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    let pa = a.local_addr().map_err(io("read port"))?.port();
    let pb = b.local_addr().map_err(io("read port"))?.port();
    Ok((pa, pb))
}

impl EtcdProcess {
    /// A plain-HTTP etcd on loopback.
    pub fn start() -> Result<Self, EtcdError> {
        Self::start_with(None)
    }

    /// An etcd serving clients over TLS (and mutual TLS with `client_ca`).
    pub fn start_with(tls: Option<ServerTls>) -> Result<Self, EtcdError> {
        if !Path::new(ETCD).exists() {
            return Err(EtcdError::Io {
                what: format!("{ETCD} is missing: apt-get install etcd-server"),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let dir = crate::temp::temp_dir("etcd").map_err(|e| EtcdError::Io {
            what: e.to_string(),
            source: e.source,
        })?;
        let (client_port, peer_port) = free_ports()?;
        let mut p = Self {
            child: None,
            dir,
            client_port,
            peer_port,
            tls,
            starts: 0,
        };
        p.spawn()?;
        Ok(p)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client URL (`http://127.0.0.1:PORT`, or https).
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("etcd-{}.log", self.starts))
    }

    fn spawn(&mut self) -> Result<(), EtcdError> {
        self.starts += 1;
        let log_path = self.log_path();
        let log = File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.endpoint();
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name=default")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.cert.display()))
                .arg(format!("--key-file={}", t.key.display()));
            if let Some(ca) = &t.client_ca {
                cmd.arg("--client-cert-auth")
                    .arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        let stderr = log.try_clone().map_err(io("dup etcd log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(io(format!("spawn {ETCD}")))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// etcd 3.4 logs "serving client traffic (in)securely" once its client
    /// listener serves requests (older loggers: "ready to serve client
    /// requests").
    fn wait_ready(&mut self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(EtcdError::Exited {
                        status: status.to_string(),
                        log: self.log_path(),
                        tail: self.tail(),
                    });
                }
            }
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains("serving client traffic")
                || log.contains("ready to serve client requests")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EtcdError::NotReady {
                    secs: READY_TIMEOUT.as_secs(),
                    log: self.log_path(),
                    tail: self.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills etcd (SIGKILL: like a crash; etcd fsyncs its WAL before it
    /// answers, so acknowledged writes and leases survive).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        self.spawn()
    }

    /// The etcd process ID (for measuring its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway PKI: a CA, a server certificate for 127.0.0.1/localhost and
/// a client certificate, all PEM.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(step: &str, args: &[&str], cwd: &Path) -> Result<(), EtcdError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(io("run openssl (apt-get install openssl)"))?;
    if !out.status.success() {
        return Err(EtcdError::Openssl {
            step: step.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

impl TestPki {
    /// Generates the PKI into `dir` (P-256 keys, valid for a day).
    pub fn generate(dir: &Path) -> Result<Self, EtcdError> {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        ca_args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=fct-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl("CA", &ca_args, dir)?;
        for (name, eku, san) in [
            (
                "server",
                "serverAuth",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            let ext = format!("{san}extendedKeyUsage={eku}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n");
            std::fs::write(dir.join(format!("{name}.ext")), ext)
                .map_err(io("write openssl extensions"))?;
            let (key, csr, pem, extf) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let subj = format!("/CN=fct-{name}");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(&format!("{name} key"), &req, dir)?;
            openssl(
                &format!("{name} certificate"),
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "1",
                    "-extfile",
                    &extf,
                ],
                dir,
            )?;
        }
        Ok(Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }
}
