//! The throughput workloads: every client runs one operation after another
//! (a closed loop) for warmup + duration; operations that start after the
//! warmup and finish before the end are measured.
//!
//! Each run works under its own root, `/ensemble-bench/<workload>-<run id>`,
//! so runs never collide; nothing is deleted afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokio::sync::{mpsc, watch};

use crate::backend::{Conn, Mode, OpError, OpResult};
use crate::report::{record, Counters, Progress, Report, Tally};
use crate::Settings;

/// Which throughput workload.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Create,
    Set,
    Get { linearizable: bool },
    Mixed,
    Session,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Set => "set",
            Kind::Get { linearizable: false } => "get",
            Kind::Get { linearizable: true } => "get-linearizable",
            Kind::Mixed => "mixed",
            Kind::Session => "session",
        }
    }
}

/// Znodes each `mixed` client reads and sets.
const MIXED_FIXTURES: usize = 10;

/// The measured window, sent to every client once all are ready.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

/// Prints the first few failures in full, so a run that fails says why.
pub fn report_error(e: &OpError) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("ensemble-bench: operation failed: {e}");
    }
}

/// A small, fast random number generator (xorshift64*), one per client.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One client's state during a run.
struct Worker {
    s: Arc<Settings>,
    kind: Kind,
    i: usize,
    conn: Conn,
    value: Vec<u8>,
    /// Its own znode (set, get) or subtree (mixed).
    own: String,
    rng: Rng,
    /// Znodes `mixed` created and may delete.
    created: Vec<String>,
    n: u64,
}

impl Worker {
    async fn open(s: Arc<Settings>, kind: Kind, i: usize) -> OpResult<Worker> {
        let conn = Conn::open_pinned(&s, i).await?;
        let own = format!("{}/c{i}", s.root);
        let value = s.value();
        match kind {
            Kind::Set | Kind::Get { .. } => conn.create(&own, value.clone(), Mode::Persistent).await?,
            Kind::Mixed => {
                conn.create(&own, Vec::new(), Mode::Persistent).await?;
                for k in 0..MIXED_FIXTURES {
                    conn.create(&format!("{own}/f{k}"), value.clone(), Mode::Persistent)
                        .await?;
                }
            }
            Kind::Create | Kind::Session => {}
        }
        Ok(Worker {
            s,
            kind,
            i,
            conn,
            value,
            own,
            rng: Rng::new(i as u64 + 1),
            created: Vec::new(),
            n: 0,
        })
    }

    async fn op(&mut self) -> OpResult<()> {
        self.n += 1;
        match self.kind {
            Kind::Create => {
                self.conn
                    .create(
                        &format!("{}/n-", self.s.root),
                        self.value.clone(),
                        Mode::Sequential,
                    )
                    .await
            }
            Kind::Set => self.conn.set(&self.own, self.value.clone()).await,
            Kind::Get { linearizable } => self.conn.get(&self.own, linearizable).await.map(drop),
            Kind::Session => {
                let path = format!("{}/s{}-{}", self.s.root, self.i, self.n);
                self.conn.session_loop(&self.s, self.i, &path).await
            }
            Kind::Mixed => {
                let fixture = format!("{}/f{}", self.own, self.rng.below(MIXED_FIXTURES as u64));
                match self.rng.below(100) {
                    0 => self.mixed_create().await,
                    1..=8 => self.conn.set(&fixture, self.value.clone()).await,
                    9..=53 => self.conn.get(&fixture, false).await.map(drop),
                    54..=98 => self.conn.children(&self.own).await.map(drop),
                    _ => match self.created.pop() {
                        Some(path) => self.conn.delete(&path).await,
                        None => self.mixed_create().await,
                    },
                }
            }
        }
    }

    async fn mixed_create(&mut self) -> OpResult<()> {
        let path = format!("{}/m{}", self.own, self.n);
        self.conn
            .create(&path, self.value.clone(), Mode::Persistent)
            .await?;
        self.created.push(path);
        Ok(())
    }

    /// Runs operations until the window ends; measures those inside it.
    async fn run(&mut self, w: Window, counters: &Counters) -> Tally {
        let mut tally = Tally::default();
        loop {
            let t0 = Instant::now();
            if t0 >= w.end {
                break;
            }
            let r = self.op().await;
            let t1 = Instant::now();
            let measured = t0 >= w.start && t1 <= w.end;
            match r {
                Ok(()) => {
                    if measured {
                        record(&mut tally.hist, t1 - t0);
                        counters.ops.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    if measured {
                        report_error(&e);
                        tally.error(e.kind);
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    // Do not spin on a cluster that refuses everything.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        tally
    }
}

/// Runs one throughput workload and reports it.
pub async fn run(s: &Settings, kind: Kind) -> Result<Report> {
    let endpoints: Vec<&str> = s.endpoints.iter().map(String::as_str).collect();
    let admin = Conn::open(s, &endpoints)
        .await
        .with_context(|| format!("connecting to {}", s.endpoints.join(",")))?;
    admin
        .ensure_path(&s.root)
        .await
        .with_context(|| format!("creating {}", s.root))?;

    let s = Arc::new(s.clone());
    let counters = Arc::new(Counters::default());
    let (ready_tx, mut ready_rx) = mpsc::channel::<OpResult<()>>(s.clients);
    let (window_tx, window_rx) = watch::channel::<Option<Window>>(None);
    let mut tasks = Vec::with_capacity(s.clients);
    for i in 0..s.clients {
        let (s, ready, mut window, counters) =
            (s.clone(), ready_tx.clone(), window_rx.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut worker = match Worker::open(s, kind, i).await {
                Ok(w) => {
                    let _ = ready.send(Ok(())).await;
                    w
                }
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return None;
                }
            };
            let w = loop {
                if let Some(w) = *window.borrow_and_update() {
                    break w;
                }
                if window.changed().await.is_err() {
                    return None;
                }
            };
            let tally = worker.run(w, &counters).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), worker.conn.close()).await;
            Some(tally)
        }));
    }
    drop(ready_tx);
    for _ in 0..s.clients {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                for t in &tasks {
                    t.abort();
                }
                return Err(anyhow!("client setup failed: {e}"));
            }
            None => return Err(anyhow!("a client task ended before it was ready")),
        }
    }

    let start = Instant::now() + s.warmup;
    let window = Window {
        start,
        end: start + s.duration,
    };
    let _ = window_tx.send(Some(window));
    let progress = Progress::start(
        s.progress,
        kind.name().into(),
        s.warmup + s.duration,
        counters.clone(),
    );
    let mut tally = Tally::default();
    for t in tasks {
        if let Ok(Some(part)) = t.await {
            tally.merge(part);
        }
    }
    progress.finish().await;
    let _ = admin.close().await;
    let mut report = Report::new(&s, kind.name(), s.duration, tally);
    report.set("root", s.root.clone());
    Ok(report)
}
