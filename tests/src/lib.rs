//! Test harness: real `ensemble-server` processes on loopback ports.
//!
//! A [`Cluster`] takes free ports and its own temp directory, so tests run in
//! parallel and beside a local cluster. Every process it starts is killed
//! when it is dropped, pass or fail; on failure the tail of each node's log
//! is printed. At most [`max_clusters`] clusters run at once per test binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ensemble_client::node_status_tls;
use ensemble_client::{Client, NodeStatus, Options, Role, SessionId, SessionInfo, TlsOptions, Zxid};

/// Settings of a test cluster; the defaults favour fast elections.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: u64,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub tick_ms: u64,
    pub snapshot_entries: u64,
    pub log_keep_entries: u64,
    pub extra_args: Vec<String>,
    /// Extra environment of every node (`RUST_LOG=debug`, say); what
    /// `start_node_with` passes comes on top.
    pub env: Vec<(String, String)>,
    /// TLS on for clients and peers, with certificates that
    /// `deploy/dev-certs` makes for this cluster; None: plaintext.
    pub tls: Option<ClusterTls>,
}

/// How a test cluster runs TLS. Its certificates are made into
/// [`Cluster::certs_dir`] when it starts: `ca.pem`, `ensembleN.pem/.key`
/// per node, `client.pem/.key`.
#[derive(Clone, Debug, Default)]
pub struct ClusterTls {
    /// Members require client certificates (`--tls-client-auth`); the
    /// harness's own clients and status probes then present `client.pem`.
    pub client_auth: bool,
}

/// Runs `deploy/dev-certs` into `dir` for these member names: a CA of its
/// own (unless `dir` already has one) and its certificates. Needs openssl.
pub fn dev_certs(dir: &Path, names: &[String]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-certs");
    let out = Command::new(script)
        .arg(dir)
        .args(names)
        .output()
        .expect("run deploy/dev-certs (is openssl installed?)");
    assert!(
        out.status.success(),
        "deploy/dev-certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client-side TLS options for certificates made by `deploy/dev-certs`
/// in `dir`: trust its CA and, if `identity`, present `client.pem`.
pub fn tls_options(dir: &Path, identity: bool) -> TlsOptions {
    let read = |name: &str| std::fs::read(dir.join(name)).expect("read a dev certificate");
    let tls = TlsOptions::new(read("ca.pem"));
    if identity {
        tls.with_identity(read("client.pem"), read("client.key"))
    } else {
        tls
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            raft_heartbeat_ms: 100,
            election_timeout_ms: 500,
            tick_ms: 50,
            snapshot_entries: 100_000,
            log_keep_entries: 10_000,
            extra_args: vec![],
            env: vec![],
            tls: None,
        }
    }
}

impl ClusterOptions {
    /// The longest election timeout a node may draw.
    pub fn election_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms * 2)
    }
}

/// How many clusters may run at once in one test binary (ENSEMBLE_TEST_CLUSTERS, default 2).
pub fn max_clusters() -> usize {
    std::env::var("ENSEMBLE_TEST_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

struct Permit;

impl Permit {
    fn acquire() -> Permit {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= max_clusters() {
            running = FREED.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        FREED.notify_one();
    }
}

/// A binary built by this package, next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with cargo test",
        path.display()
    );
    path
}

/// Free loopback ports. They come from below the kernel's ephemeral range
/// (`ip_local_port_range`), so no outgoing connection (of another test's
/// clients, say) can take one between this check and the server's bind,
/// as happened with ports from binding port 0; a process-wide cursor
/// never hands out a port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    const LOW: u16 = 10_000;
    let high = ephemeral_low().saturating_sub(1);
    if high < LOW + 1_000 {
        return port_zero(n);
    }
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let mut port = next.unwrap_or_else(|| LOW + rand::random::<u16>() % (high - LOW));
    let mut ports = Vec::with_capacity(n);
    for _ in LOW..=high {
        if ports.len() == n {
            break;
        }
        port = if port >= high { LOW } else { port + 1 };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free ports in {LOW}..={high}");
    *next = Some(port);
    ports
}

/// The lowest port the kernel picks for outgoing connections.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Ports found by binding port 0 (where no range lies below the ephemeral one).
fn port_zero(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// One server process and its addresses.
pub struct NodeProc {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    /// Where it serves `GET /metrics`.
    pub metrics_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Arguments after every other one (they win: a later flag overrides).
    pub node_args: Vec<String>,
    child: Option<Child>,
}

/// A cluster of real server processes.
pub struct Cluster {
    pub options: ClusterOptions,
    pub nodes: Vec<NodeProc>,
    peers: String,
    dir: tempfile::TempDir,
    _permit: Permit,
}

impl Cluster {
    /// Starts a cluster and waits until it has a leader.
    pub async fn start(options: ClusterOptions) -> Cluster {
        let permit = tokio::task::spawn_blocking(Permit::acquire)
            .await
            .expect("permit");
        let dir = tempfile::Builder::new()
            .prefix("ensemble-test-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(options.nodes as usize * 3);
        let nodes: Vec<NodeProc> = (1..=options.nodes)
            .map(|id| {
                let i = (id - 1) as usize * 3;
                NodeProc {
                    id,
                    client_addr: format!("127.0.0.1:{}", ports[i]),
                    peer_addr: format!("127.0.0.1:{}", ports[i + 1]),
                    metrics_addr: format!("127.0.0.1:{}", ports[i + 2]),
                    data_dir: dir.path().join(format!("node{id}")),
                    log: dir.path().join(format!("node{id}.log")),
                    node_args: vec![],
                    child: None,
                }
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}/{}", n.id, n.peer_addr, n.client_addr))
            .collect::<Vec<_>>()
            .join(",");
        if options.tls.is_some() {
            let names: Vec<String> = (1..=options.nodes).map(|id| format!("ensemble{id}")).collect();
            dev_certs(&dir.path().join("certs"), &names);
        }
        let mut cluster = Cluster {
            options,
            nodes,
            peers,
            dir,
            _permit: permit,
        };
        for id in 1..=cluster.options.nodes {
            cluster.start_node(id);
        }
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster
    }

    /// The cluster's temp directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the certificates of a TLS cluster are (see [`ClusterTls`]).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The TLS options the harness's clients and probes use: None for a
    /// plaintext cluster.
    pub fn tls(&self) -> Option<TlsOptions> {
        let tls = self.options.tls.as_ref()?;
        Some(tls_options(&self.certs_dir(), tls.client_auth))
    }

    /// Sets arguments node `id` gets last, from its next start on (they
    /// override the cluster's: a certificate of its own, say).
    pub fn set_node_args(&mut self, id: u64, args: Vec<String>) {
        self.nodes[(id - 1) as usize].node_args = args;
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[(id - 1) as usize]
    }

    /// Every node's client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_addr.clone()).collect()
    }

    /// One node's client address.
    pub fn endpoint(&self, id: u64) -> String {
        self.node(id).client_addr.clone()
    }

    /// Where node `id` serves its Prometheus metrics (`GET /metrics`).
    pub fn metrics_addr(&self, id: u64) -> String {
        self.node(id).metrics_addr.clone()
    }

    /// Starts (or restarts) node `id` with its data directory.
    pub fn start_node(&mut self, id: u64) {
        self.start_node_with(id, &[]);
    }

    /// Starts (or restarts) node `id` with extra environment variables
    /// (libfaketime's, say).
    pub fn start_node_with(&mut self, id: u64, env: &[(String, String)]) {
        let o = self.options.clone();
        let peers = self.peers.clone();
        let certs = self.certs_dir();
        let node = &mut self.nodes[(id - 1) as usize];
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(tls) = &o.tls {
            for (flag, file) in [
                ("--tls-ca", "ca.pem".to_string()),
                ("--tls-cert", format!("ensemble{id}.pem")),
                ("--tls-key", format!("ensemble{id}.key")),
            ] {
                tls_args.push(flag.into());
                tls_args.push(certs.join(file).into());
            }
            if tls.client_auth {
                tls_args.push("--tls-client-auth".into());
            }
        }
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut cmd = Command::new(bin("ensemble-test-server"));
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--peers")
            .arg(&peers)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--metrics-addr")
            .arg(&node.metrics_addr)
            .arg("--raft-heartbeat-ms")
            .arg(o.raft_heartbeat_ms.to_string())
            .arg("--election-timeout-ms")
            .arg(o.election_timeout_ms.to_string())
            .arg("--tick-ms")
            .arg(o.tick_ms.to_string())
            .arg("--min-session-timeout-ms")
            .arg("1000")
            .arg("--snapshot-entries")
            .arg(o.snapshot_entries.to_string())
            .arg("--log-keep-entries")
            .arg(o.log_keep_entries.to_string())
            .args(&tls_args)
            .args(&o.extra_args)
            .args(&node.node_args)
            .env(
                "RUST_LOG",
                std::env::var("ENSEMBLE_TEST_RUST_LOG")
                    .unwrap_or_else(|_| ensemble_server::DEFAULT_LOG_FILTER.into()),
            )
            .envs(o.env.iter().chain(env).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawn ensemble-test-server"));
    }

    /// `kill -9` node `id`.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `id` (SIGSTOP): it holds its connections but answers nothing.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(child) = &self.node(id).child {
            let status = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {sig} node {id}");
        }
    }

    /// The id of the node at a client address.
    pub fn id_of(&self, endpoint: &str) -> u64 {
        self.nodes
            .iter()
            .find(|n| n.client_addr == endpoint)
            .map(|n| n.id)
            .expect("endpoint of this cluster")
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node(id).data_dir.clone()
    }

    /// Moves node `id`'s data to `dir` (it must be stopped); it starts
    /// from there from now on.
    pub fn move_data_dir(&mut self, id: u64, dir: &Path) {
        assert!(!self.is_running(id), "stop node {id} first");
        let node = &mut self.nodes[(id - 1) as usize];
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", node.data_dir.display()))
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copy the data of node {id}");
        node.data_dir = dir.to_path_buf();
    }

    /// Waits until node `id` exits on its own; returns its exit code and
    /// when it exited (None if still running after `within`).
    pub async fn wait_exit(&mut self, id: u64, within: Duration) -> Option<(i32, Instant)> {
        let deadline = Instant::now() + within;
        loop {
            let node = &mut self.nodes[(id - 1) as usize];
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Some((status.code().unwrap_or(-1), Instant::now()));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Node `id`'s log so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.node(id).log).unwrap_or_default()
    }

    /// Node `id`'s resident memory in KiB (from /proc), if it runs.
    pub fn rss_kib(&self, id: u64) -> Option<u64> {
        let pid = self.pid(id)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Node `id`'s process id, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        Some(self.node(id).child.as_ref()?.id())
    }

    /// How many file descriptors node `id` has open.
    pub fn open_fds(&self, id: u64) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.pid(id)?))
                .ok()?
                .count(),
        )
    }

    /// Whether node `id` runs.
    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Node `id`'s status, if it answers.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        node_status_tls(
            &self.endpoint(id),
            Duration::from_secs(1),
            false,
            self.tls().as_ref(),
        )
        .await
        .ok()
    }

    /// Node `id`'s status with a digest of its state.
    pub async fn digest(&self, id: u64) -> Option<NodeStatus> {
        node_status_tls(
            &self.endpoint(id),
            Duration::from_secs(5),
            true,
            self.tls().as_ref(),
        )
        .await
        .ok()
    }

    /// Waits until a running node is leader, every running node names it
    /// and is ready. (Right after an election a node that has not yet heard
    /// the leader's heartbeats refuses sessions, so a test starting then
    /// would see its client bounce.)
    pub async fn wait_for_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut named = Vec::new();
            let mut leading = Vec::new();
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                match self.status(n.id).await {
                    Some(s) => {
                        named.push(if s.ready { s.leader_id.unwrap_or(0) } else { 0 });
                        if s.role == Role::Leader {
                            leading.push(s.node_id);
                        }
                    }
                    None => named.push(0),
                }
            }
            named.dedup();
            if leading.len() == 1 && named == leading {
                return leading[0];
            }
            assert!(
                Instant::now() < deadline,
                "no agreed, ready leader within {within:?}: nodes name {named:?} (0: none or not ready), leading {leading:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied at least `zxid`.
    pub async fn wait_applied_everywhere(&self, zxid: Zxid, within: Duration) {
        let deadline = Instant::now() + within;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                if self.status(n.id).await.is_some_and(|s| s.applied_zxid >= zxid) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} did not apply zxid {zxid} within {within:?}",
                    n.id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A client talking only to the given nodes.
    pub async fn client_on(&self, ids: &[u64], session_timeout: Duration) -> Client {
        let endpoints: Vec<String> = ids.iter().map(|id| self.endpoint(*id)).collect();
        Client::connect(
            &endpoints,
            Options {
                session_timeout,
                tls: self.tls(),
                ..Options::default()
            },
        )
        .await
        .expect("connect")
    }

    /// A client that may use any node.
    pub async fn client(&self, session_timeout: Duration) -> Client {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        self.client_on(&ids, session_timeout).await
    }

    /// Starts a holder process: a client in its own process holding an
    /// ephemeral at `path`, connected through the given nodes.
    pub fn spawn_holder(&self, ids: &[u64], timeout: Duration, path: &str) -> Holder {
        let endpoints: Vec<String> = ids.iter().map(|id| self.endpoint(*id)).collect();
        // The holder reads TLS and credentials from the environment (the
        // fault suite's secure mode); a test cluster here is plaintext.
        let mut child = Command::new(bin("ensemble-test-holder"))
            .arg(endpoints.join(","))
            .arg(timeout.as_millis().to_string())
            .arg(path)
            .env_remove("ENSEMBLE_TLS_CA")
            .env_remove("ENSEMBLE_TLS_CERT")
            .env_remove("ENSEMBLE_TLS_KEY")
            .env_remove("ENSEMBLE_USER")
            .env_remove("ENSEMBLE_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn holder");
        let stdout = child.stdout.take().expect("holder stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("holder output");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"READY"), "holder said {line:?}");
        let secret = (0..words[2].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&words[2][i..i + 2], 16).expect("hex"))
            .collect();
        Holder {
            child,
            session: SessionInfo {
                session_id: SessionId(words[1].parse().expect("session id")),
                secret,
                timeout,
            },
            zxid: Zxid(words[3].parse().expect("zxid")),
        }
    }

    /// Prints the tail of every node's log (ENSEMBLE_TEST_LOG_TAIL lines,
    /// default 40).
    fn print_logs(&self) {
        let keep = std::env::var("ENSEMBLE_TEST_LOG_TAIL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(keep)..];
            eprintln!("---- node {} log tail ({}) ----", n.id, n.log.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // For debugging: ENSEMBLE_TEST_KEEP_LOGS=DIR keeps every node's log.
        if let Some(keep) = std::env::var_os("ENSEMBLE_TEST_KEEP_LOGS") {
            let name = self
                .dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let into = Path::new(&keep).join(name.unwrap_or_default());
            if std::fs::create_dir_all(&into).is_ok() {
                for n in &self.nodes {
                    let _ = std::fs::copy(&n.log, into.join(format!("node{}.log", n.id)));
                }
            }
        }
        for id in 1..=self.nodes.len() as u64 {
            self.kill(id);
        }
    }
}

/// A client process holding an ephemeral znode.
pub struct Holder {
    child: Child,
    pub session: SessionInfo,
    /// The zxid of the ephemeral's create.
    pub zxid: Zxid,
}

impl Holder {
    /// `kill -9` the client: its heartbeats stop at once.
    pub fn kill(&mut self) -> Instant {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Instant::now()
    }

    /// Whether the holder still runs (it exits 3 when its session expires).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment that runs a process with its clocks moved by
/// `offset` (libfaketime syntax, e.g. "+1h"), the monotonic clock too or
/// not. Needs Debian's `faketime` package.
pub fn faketime_env(offset: &str, fake_monotonic: bool) -> Vec<(String, String)> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libfaketime is missing: install Debian's faketime package (apt-get install faketime)");
    vec![
        ("LD_PRELOAD".into(), lib.into()),
        ("FAKETIME".into(), offset.into()),
        (
            "DONT_FAKE_MONOTONIC".into(),
            if fake_monotonic { "0" } else { "1" }.into(),
        ),
    ]
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns when it held.
pub async fn poll_until<F, Fut>(within: Duration, what: &str, mut check: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CLI process whose stdout lines are collected with their arrival times.
pub struct CliProc {
    child: Child,
    lines: std::sync::Arc<Mutex<Vec<(Instant, String)>>>,
}

impl CliProc {
    /// Starts `ensemble-test-cli` with these arguments.
    pub fn spawn(args: &[&str]) -> CliProc {
        let mut child = Command::new(bin("ensemble-test-cli"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cli");
        let stdout = child.stdout.take().expect("cli stdout");
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), line));
            }
        });
        CliProc { child, lines }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first line starting with `prefix`, if printed yet.
    pub fn line_starting(&self, prefix: &str) -> Option<(Instant, String)> {
        self.lines().into_iter().find(|(_, l)| l.starts_with(prefix))
    }

    /// `kill -9` the process.
    pub fn kill(&mut self) -> Instant {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Instant::now()
    }
}

impl Drop for CliProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ensemble-test-cli` to completion with `stdin`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    run_cli_env(args, &[], stdin)
}

/// [`run_cli`] with environment variables (`ENSEMBLE_PASSWORD`, say). The
/// CLI never inherits the test's own `ENSEMBLE_USER` / `ENSEMBLE_PASSWORD`.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(bin("ensemble-test-cli"))
        .args(args)
        .env_remove("ENSEMBLE_USER")
        .env_remove("ENSEMBLE_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cli");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write cli stdin");
    }
    let out = child.wait_with_output().expect("cli output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
/// The argon2 hash of `password` for a `--users` file, as
/// `ensemble-server hash-password` prints it (the password on its stdin).
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(bin("ensemble-test-server"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ensemble-test-server hash-password");
    if let Some(mut input) = child.stdin.take() {
        writeln!(input, "{password}").expect("write the password");
    }
    let out = child.wait_with_output().expect("hash-password output");
    assert!(
        out.status.success(),
        "hash-password failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout)
        .expect("UTF-8 hash")
        .trim()
        .to_string();
    assert!(hash.starts_with("$argon2"), "not an argon2 PHC hash: {hash:?}");
    hash
}

/// Writes a `--users` file (`[users]`, one `name = "hash"` a user) for
/// these `(user, password)` pairs into `dir`; returns its path.
pub fn write_users_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("[users]\n");
    for (user, password) in users {
        text.push_str(&format!("{user} = \"{}\"\n", hash_password(password)));
    }
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write the users file");
    path
}

pub mod fault;
pub mod scrape;
