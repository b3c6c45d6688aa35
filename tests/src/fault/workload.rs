//! The workload: client tasks doing conditional sets, reads, sequential
//! creates and lock acquisitions, plus client processes holding ephemerals
//! (some deliberately killed), all recorded for the checker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_client::recipes::lock::Lock;
use ensemble_client::{Client, CreateMode, Error, ErrorCode, Options, TlsOptions};
use rand::Rng;

use super::checker::FinalState;
use super::history::{Op, Record, Status};

/// What to run.
#[derive(Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    pub clients: u32,
    pub duration: Duration,
    pub session_timeout: Duration,
    pub keys: u32,
    /// Client processes holding an ephemeral each; `kill_holders` of them are killed.
    pub holders: u32,
    pub kill_holders: u32,
    pub holder_bin: PathBuf,
    /// Longest acceptable gap between a holder's death and its ephemeral's
    /// disappearance, beyond the session timeout (election time plus slack).
    pub expiry_slack: Duration,
    /// Every path of this run lives under it, so runs never see each other.
    pub prefix: String,
    /// What every client of the workload starts from: TLS and credentials
    /// for a secure cluster (see [`options_from_env`](super::options_from_env)),
    /// else the defaults. Each client sets its timeouts on top.
    pub options: Options,
}

/// Without the options: they may hold a password.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoints", &self.endpoints)
            .field("clients", &self.clients)
            .field("duration", &self.duration)
            .field("session_timeout", &self.session_timeout)
            .field("keys", &self.keys)
            .field("holders", &self.holders)
            .field("kill_holders", &self.kill_holders)
            .field("holder_bin", &self.holder_bin)
            .field("expiry_slack", &self.expiry_slack)
            .field("prefix", &self.prefix)
            .field("tls", &self.options.tls.is_some())
            .field("user", &self.options.credentials.is_some())
            .finish()
    }
}

/// What happened, for the checker and the report.
#[derive(Debug, Default)]
pub struct Report {
    pub history: Vec<Record>,
    pub finals: FinalState,
    /// Problems seen live: expired live sessions, late ephemerals, diverging replicas.
    pub violations: Vec<String>,
    /// For each killed holder: ms from the kill until its ephemeral was gone everywhere.
    pub expiry_delays_ms: Vec<u64>,
    /// The longest stretch with no acknowledged operation.
    pub max_gap_ms: u64,
}

fn classify(e: &Error, write: bool) -> Status {
    match e.code() {
        ErrorCode::ConnectionLoss | ErrorCode::OperationTimeout if write => Status::Unknown,
        _ => Status::Fail,
    }
}

struct Clock(Instant);

impl Clock {
    fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

async fn connect(cfg: &Config) -> Result<Client, Error> {
    Client::connect(
        &cfg.endpoints,
        Options {
            session_timeout: cfg.session_timeout,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(8),
            ..cfg.options.clone()
        },
    )
    .await
}

/// Creates the registers and parents the clients use.
async fn setup(cfg: &Config) -> Result<(), Error> {
    let c = connect(cfg).await?;
    for p in ["", "/reg", "/seq", "/eph", "/locks"] {
        match c
            .create(&format!("{}{p}", cfg.prefix), vec![], CreateMode::Persistent)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NodeExists => {}
            Err(e) => return Err(e),
        }
    }
    for k in 0..cfg.keys {
        match c
            .create(
                &format!("{}/reg/k{k}", cfg.prefix),
                b"init".to_vec(),
                CreateMode::Persistent,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NodeExists => {}
            Err(e) => return Err(e),
        }
    }
    c.close().await
}

async fn client_task(
    id: u32,
    cfg: Config,
    clock: Arc<Clock>,
    out: Arc<Mutex<Vec<Record>>>,
    problems: Arc<Mutex<Vec<String>>>,
) {
    let client = match connect(&cfg).await {
        Ok(c) => c,
        Err(e) => {
            problems
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("client {id} could not connect: {e}"));
            return;
        }
    };
    let lock = Lock::new(&client, &format!("{}/locks/l", cfg.prefix));
    let mut versions: HashMap<String, i32> = HashMap::new();
    let mut n = 0u64;
    let end = clock.0 + cfg.duration;
    while Instant::now() < end {
        n += 1;
        let roll: u32 = rand::thread_rng().gen_range(0..100);
        let key = format!(
            "{}/reg/k{}",
            cfg.prefix,
            rand::thread_rng().gen_range(0..cfg.keys)
        );
        let invoke_ms = clock.ms();
        let mut rec = Record {
            client: id,
            op: Op::Read {
                key: key.clone(),
                synced: false,
            },
            invoke_ms,
            complete_ms: 0,
            status: Status::Ok,
            version: None,
            seen: None,
            created: None,
            token: None,
        };
        if roll < 40 {
            let data = format!("c{id}-{n}");
            let expected = if roll < 8 {
                -1
            } else {
                *versions.get(&key).unwrap_or(&0)
            };
            rec.op = Op::Write {
                key: key.clone(),
                data: data.clone(),
                expected,
            };
            match client.set(&key, data.into_bytes(), expected).await {
                Ok(stat) => {
                    versions.insert(key, stat.version);
                    rec.version = Some(stat.version);
                }
                Err(e) => {
                    if e.code() == ErrorCode::BadVersion {
                        versions.remove(&key);
                    }
                    rec.status = classify(&e, true);
                }
            }
        } else if roll < 70 {
            let synced = roll < 55;
            rec.op = Op::Read {
                key: key.clone(),
                synced,
            };
            let read = async {
                if synced {
                    client.sync(&key).await?;
                }
                client.get(&key).await
            };
            match read.await {
                Ok((data, stat)) => {
                    versions.insert(key, stat.version);
                    rec.version = Some(stat.version);
                    rec.seen = Some(String::from_utf8_lossy(&data).into_owned());
                }
                Err(e) => rec.status = classify(&e, false),
            }
        } else if roll < 85 {
            rec.op = Op::SeqCreate {
                parent: format!("{}/seq", cfg.prefix),
            };
            match client
                .create(
                    &format!("{}/seq/n-", cfg.prefix),
                    vec![],
                    CreateMode::PersistentSequential,
                )
                .await
            {
                Ok(p) => rec.created = Some(p),
                Err(e) => rec.status = classify(&e, true),
            }
        } else {
            rec.op = Op::Lock { name: "l".into() };
            match lock.acquire_within(Duration::from_secs(10)).await {
                Ok(Some(guard)) => {
                    rec.invoke_ms = clock.ms();
                    rec.token = Some(guard.token());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    rec.complete_ms = clock.ms();
                    let node = guard.node().to_string();
                    if guard.release().await.is_err() {
                        // Not released for sure: keep trying, or everyone
                        // after us waits until our session ends.
                        rec.status = Status::Unknown;
                        for _ in 0..20 {
                            match client.delete(&node, -1).await {
                                Ok(()) => break,
                                Err(e) if e.code() == ErrorCode::NoNode => break,
                                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                            }
                        }
                    }
                }
                _ => rec.status = Status::Fail,
            }
        }
        if rec.complete_ms == 0 {
            rec.complete_ms = clock.ms();
        }
        if client.is_expired() {
            problems.lock().unwrap_or_else(|p| p.into_inner()).push(format!(
                "client {id}: its live session expired at {} ms",
                rec.complete_ms
            ));
            out.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
            return;
        }
        out.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }
    let _ = client.close().await;
}

struct HolderProc {
    path: String,
    child: Child,
    killed_ms: Option<u64>,
}

fn spawn_holder(cfg: &Config, path: &str) -> std::io::Result<HolderProc> {
    use std::io::BufRead;
    let mut child = Command::new(&cfg.holder_bin)
        .arg(cfg.endpoints.join(","))
        .arg(cfg.session_timeout.as_millis().to_string())
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.as_mut() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    if !line.starts_with("READY") {
        let _ = child.kill();
        return Err(std::io::Error::other(format!("holder for {path} said {line:?}")));
    }
    Ok(HolderProc {
        path: path.to_string(),
        child,
        killed_ms: None,
    })
}

/// Whether `path` exists, as each node sees it after a sync (None: the
/// node did not answer within half a second).
async fn presence(clients: &[Client], path: &str) -> Vec<Option<bool>> {
    let mut out = Vec::new();
    for c in clients {
        let ask = async {
            c.sync(path).await.ok()?;
            c.exists(path).await.ok().map(|s| s.is_some())
        };
        out.push(
            tokio::time::timeout(Duration::from_millis(500), ask)
                .await
                .ok()
                .flatten(),
        );
    }
    out
}

/// A client bound to each node, so each node can be asked directly.
async fn per_node_clients(cfg: &Config, violations: &mut Vec<String>) -> Vec<Client> {
    let mut v = Vec::new();
    for ep in &cfg.endpoints {
        match Client::connect(
            std::slice::from_ref(ep),
            Options {
                connect_timeout: Duration::from_secs(60),
                session_timeout: Duration::from_secs(60),
                ..cfg.options.clone()
            },
        )
        .await
        {
            Ok(c) => v.push(c),
            Err(e) => violations.push(format!("node {ep} unreachable: {e}")),
        }
    }
    v
}

/// Polls until a majority of nodes say `path` is gone; returns when, in ms.
async fn gone_on_majority(
    clients: Arc<Vec<Client>>,
    path: String,
    clock: Arc<Clock>,
    give_up_ms: u64,
) -> Option<u64> {
    let majority = clients.len() / 2 + 1;
    loop {
        let seen = presence(&clients, &path).await;
        let now = clock.ms();
        if seen.iter().filter(|s| **s == Some(false)).count() >= majority {
            return Some(now);
        }
        if now > give_up_ms {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the workload for `cfg.duration` while the caller's faults run.
pub async fn run(cfg: Config) -> Result<Report, Error> {
    setup(&cfg).await?;
    let clock = Arc::new(Clock(Instant::now()));
    let history = Arc::new(Mutex::new(Vec::new()));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut report = Report::default();

    let mut holders = Vec::new();
    for i in 0..cfg.holders {
        let path = format!("{}/eph/h{i}", cfg.prefix);
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || spawn_holder(&c, &path)).await {
            Ok(Ok(h)) => holders.push(h),
            Ok(Err(e)) => report.violations.push(format!("holder {i} did not start: {e}")),
            Err(e) => report.violations.push(format!("holder {i} did not start: {e}")),
        }
    }
    let per_node = Arc::new(per_node_clients(&cfg, &mut report.violations).await);
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|id| {
            tokio::spawn(client_task(
                id,
                cfg.clone(),
                clock.clone(),
                history.clone(),
                problems.clone(),
            ))
        })
        .collect();

    // Kill some holders a third of the way in, and time their ephemerals' end.
    tokio::time::sleep(cfg.duration / 3).await;
    let limit = cfg.session_timeout + cfg.expiry_slack;
    let mut watchers = Vec::new();
    for h in holders.iter_mut().take(cfg.kill_holders as usize) {
        let _ = h.child.kill();
        let _ = h.child.wait();
        let killed = clock.ms();
        h.killed_ms = Some(killed);
        let give_up = killed + (limit * 3).as_millis() as u64 + cfg.duration.as_millis() as u64;
        watchers.push((
            h.path.clone(),
            killed,
            tokio::spawn(gone_on_majority(
                per_node.clone(),
                h.path.clone(),
                clock.clone(),
                give_up,
            )),
        ));
    }
    for t in tasks {
        let _ = t.await;
    }
    for (path, killed, w) in watchers {
        match w.await.ok().flatten() {
            Some(gone) => {
                let delay = gone.saturating_sub(killed);
                report.expiry_delays_ms.push(delay);
                if delay > limit.as_millis() as u64 {
                    report.violations.push(format!(
                        "{path}: gone {delay} ms after its client died (limit {limit:?})"
                    ));
                }
            }
            None => report
                .violations
                .push(format!("{path}: never gone on a majority after its client died")),
        }
    }

    // After the faults: every node must agree on the ephemerals.
    for h in holders.iter_mut() {
        let record = |killed_ms| Record {
            client: 1000,
            op: Op::Ephemeral {
                path: h.path.clone(),
                killed_ms,
            },
            invoke_ms: 0,
            complete_ms: clock.ms(),
            status: Status::Ok,
            version: None,
            seen: None,
            created: None,
            token: None,
        };
        match h.killed_ms {
            Some(killed) => {
                let seen = presence(&per_node, &h.path).await;
                if seen.iter().any(|s| *s != Some(false)) {
                    report
                        .violations
                        .push(format!("{}: after the run, nodes see {seen:?}", h.path));
                }
                report.history.push(record(Some(killed)));
            }
            None => {
                let alive = matches!(h.child.try_wait(), Ok(None));
                let seen = presence(&per_node, &h.path).await;
                if !alive || seen.iter().any(|s| *s != Some(true)) {
                    report.violations.push(format!(
                        "{}: a live client's ephemeral was lost (process alive: {alive}, seen: {seen:?})",
                        h.path
                    ));
                }
                let _ = h.child.kill();
                let _ = h.child.wait();
                report.history.push(record(None));
            }
        }
    }

    // Final register state, read through a node that has caught up.
    if let Some(c) = per_node.first() {
        for k in 0..cfg.keys {
            let key = format!("{}/reg/k{k}", cfg.prefix);
            let _ = c.sync(&key).await;
            if let Ok((data, stat)) = c.get(&key).await {
                report
                    .finals
                    .insert(key, (stat.version, String::from_utf8_lossy(&data).into_owned()));
            }
        }
    }
    for c in per_node.iter() {
        let _ = c.close().await;
    }
    report
        .violations
        .extend(converged_tls(&cfg.endpoints, cfg.options.tls.as_ref()).await);

    let mut h = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    h.sort_by_key(|r| r.invoke_ms);
    // Lock waits block by design while a holder's session lingers; count
    // only znode operations for availability.
    let mut oks: Vec<u64> = h
        .iter()
        .filter(|r| r.status == Status::Ok && !matches!(r.op, Op::Lock { .. }))
        .map(|r| r.complete_ms)
        .collect();
    oks.sort_unstable();
    report.max_gap_ms = oks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    report.history.extend(h);
    report
        .violations
        .extend(problems.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
    Ok(report)
}

/// Every node at the same applied index has the same state digest: polls
/// until all nodes report one applied index, then compares their digests.
/// Returns the problems found (none: converged).
pub async fn converged(endpoints: &[String]) -> Vec<String> {
    converged_tls(endpoints, None).await
}

/// [`converged`], asking over TLS when `tls` is set (a cluster with TLS on
/// answers status calls only over TLS).
pub async fn converged_tls(endpoints: &[String], tls: Option<&TlsOptions>) -> Vec<String> {
    use ensemble_client::node_status_tls;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        let mut errors = Vec::new();
        for ep in endpoints {
            match node_status_tls(ep, Duration::from_secs(5), true, tls).await {
                Ok(s) => seen.push((ep.clone(), s.applied_zxid, s.digest)),
                Err(e) => errors.push(format!("{ep}: {e}")),
            }
        }
        if seen.len() == endpoints.len() && seen.iter().all(|s| s.1 == seen[0].1) {
            return if seen.iter().all(|s| s.2 == seen[0].2) {
                vec![]
            } else {
                vec![format!("replicas diverge at the same applied index: {seen:?}")]
            };
        }
        if Instant::now() > deadline {
            return vec![format!(
                "replicas never reached the same applied index: {seen:?}; unanswered: {errors:?}"
            )];
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
