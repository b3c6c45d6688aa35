//! The stream flooder of the `hostile-outsider` fault scenario: one client
//! connection to a member's client port on which it opens session streams
//! without limit (up to `streams`, as fast as the connection takes them)
//! and holds them open, sending nothing. Meanwhile it asks the member for
//! its status over a fresh connection every couple of seconds: a member
//! that stops answering others while one connection floods it is wedged,
//! a violation. Streams the member refuses (HTTP/2 REFUSED_STREAM or a
//! closed connection) are what a bounded member does, and are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_client::{node_status_tls, TlsOptions};
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::v1::SessionRequest;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Errors that keep the flooder from starting.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// The endpoint is not HOST:PORT.
    #[error("bad endpoint '{0}': expected HOST:PORT")]
    BadEndpoint(String),
    /// The member did not answer before the flood began.
    #[error("the member at {0} does not answer: {1}")]
    NotServing(String, String),
    /// The one connection could not be opened.
    #[error("can not connect to {0}: {1}")]
    Connect(String, String),
}

/// What to flood.
#[derive(Clone)]
pub struct Config {
    /// The member's client port.
    pub endpoint: String,
    /// Streams to open on the one connection.
    pub streams: u32,
    /// How long to hold them.
    pub duration: Duration,
    /// TLS of the cluster's client ports; None: plaintext.
    pub tls: Option<TlsOptions>,
}

/// What the flood did and how the member held up.
#[derive(Debug, Default)]
pub struct Report {
    /// Streams asked for.
    pub attempted: u64,
    /// Streams the member opened (its response headers arrived).
    pub opened: u64,
    /// Streams that failed (refused by HTTP/2, connection closed, ...).
    pub refused: u64,
    /// The first failure's text, for the report.
    pub first_refusal: Option<String>,
    /// Status probes over a fresh connection, and those that failed.
    pub probes: u32,
    /// Probes the member did not answer in time: a violation each.
    pub failed_probes: Vec<String>,
    /// The most streams seen open at once.
    pub max_opened: u64,
}

impl Report {
    /// Streams neither opened nor refused when the flood ended: waiting on
    /// the client side for the member to allow another stream.
    pub fn pending(&self) -> u64 {
        self.attempted.saturating_sub(self.opened + self.refused)
    }

    /// What went wrong: probes the member did not answer, and more streams
    /// open at once than `max_open` allows.
    pub fn violations(&self, max_open: Option<u64>) -> Vec<String> {
        let mut v = self.failed_probes.clone();
        if let Some(max) = max_open.filter(|m| self.max_opened > *m) {
            v.push(format!(
                "the member held {} streams open on one connection (limit {max})",
                self.max_opened
            ));
        }
        v
    }
}

fn tls_config(tls: &TlsOptions) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    config
}

/// How long a status probe may take while the flood runs: generous, the
/// machine running the suite is small.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Floods `cfg.endpoint` for `cfg.duration`; returns what happened.
pub async fn run(cfg: Config) -> Result<Report, FloodError> {
    let ep = cfg.endpoint.trim().to_string();
    match ep.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
        _ => return Err(FloodError::BadEndpoint(ep)),
    }
    node_status_tls(&ep, PROBE_TIMEOUT, false, cfg.tls.as_ref())
        .await
        .map_err(|e| FloodError::NotServing(ep.clone(), e.to_string()))?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{ep}")).map_err(|_| FloodError::BadEndpoint(ep.clone()))?;
    if let Some(tls) = &cfg.tls {
        endpoint = endpoint
            .tls_config(tls_config(tls))
            .map_err(|e| FloodError::Connect(ep.clone(), e.to_string()))?;
    }
    // One connection: a tonic Channel from `connect` is a single HTTP/2
    // connection, and every stream below is opened on it.
    let channel: Channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| FloodError::Connect(ep.clone(), e.to_string()))?;

    let opened = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let first_refusal = Arc::new(Mutex::new(None::<String>));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.streams as usize);
    for _ in 0..cfg.streams {
        let mut client = EnsembleClient::new(channel.clone());
        let (opened, refused, first) = (opened.clone(), refused.clone(), first_refusal.clone());
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            // The request stream stays open and silent until the flood ends.
            let (tx, rx) = mpsc::channel::<SessionRequest>(1);
            let call = client.session(ReceiverStream::new(rx));
            let held = tokio::select! {
                r = call => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match held {
                Ok(response) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = stop.wait_for(|s| *s).await;
                    drop((tx, response));
                }
                Err(status) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }));
        // Let the spawned tasks run now and then, so the flood is a flood.
        if tasks.len() % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    println!(
        "flood-streams: {} streams asked for on one connection to {ep} in {} ms",
        cfg.streams,
        started.elapsed().as_millis()
    );

    let mut report = Report {
        attempted: u64::from(cfg.streams),
        ..Report::default()
    };
    let end = started + cfg.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(2).min(end.saturating_duration_since(Instant::now()))).await;
        report.probes += 1;
        report.max_opened = report.max_opened.max(opened.load(Ordering::Relaxed));
        let asked = Instant::now();
        let probe = node_status_tls(&ep, PROBE_TIMEOUT, false, cfg.tls.as_ref()).await;
        println!(
            "flood-streams: {:>5} ms: {} open, {} refused; status from a fresh connection: {}",
            started.elapsed().as_millis(),
            opened.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
            match &probe {
                Ok(_) => format!("answered in {} ms", asked.elapsed().as_millis()),
                Err(e) => format!("FAILED: {e}"),
            }
        );
        if let Err(e) = probe {
            report.failed_probes.push(format!(
                "at {} ms into the flood the member did not answer a status call: {e}",
                started.elapsed().as_millis()
            ));
        }
    }
    report.max_opened = report.max_opened.max(opened.load(Ordering::Relaxed));
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    report.opened = opened.load(Ordering::Relaxed);
    report.refused = refused.load(Ordering::Relaxed);
    report.first_refusal = first_refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_open_streams_and_unanswered_probes_are_violations() {
        let mut r = Report {
            attempted: 20_000,
            opened: 1_000,
            refused: 5,
            max_opened: 1_000,
            ..Report::default()
        };
        assert_eq!(r.pending(), 18_995);
        assert!(r.violations(Some(1_000)).is_empty());
        assert!(r.violations(None).is_empty());
        r.max_opened = 20_000;
        assert_eq!(r.violations(Some(1_000)).len(), 1);
        assert!(r.violations(None).is_empty());
        r.failed_probes.push("no answer".into());
        assert_eq!(r.violations(Some(1_000)).len(), 2);
    }
}
