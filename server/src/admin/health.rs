//! `ensemble-server healthcheck`: asks a node for its status and exits 0 if
//! it is live (answers, and its Raft core runs) or, with `--ready`, ready (in touch with a leader and
//! the majority, and applied up to its commit index). For container health
//! checks, so it needs nothing but this binary.
//!
//! With TLS on, it reads the member's own TLS settings (the same
//! `ENSEMBLE_TLS_*` variables, so a container's health check needs no
//! extra configuration) and presents the member's certificate, which
//! passes when the member requires client certificates too.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::v1::StatusRequest;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::tls::error_chain;

/// Flags of `ensemble-server healthcheck`.
#[derive(Parser, Debug)]
#[command(
    name = "ensemble-server healthcheck",
    about = "Exit 0 if the node is live (or ready)"
)]
pub struct HealthArgs {
    /// The node's client address.
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub addr: String,
    /// Also require the node to be ready, not only live.
    #[arg(long)]
    pub ready: bool,
    /// Give up after this long.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// PEM CA certificate to verify the node's certificate with; setting it
    /// dials over TLS.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate to present (needed when the node requires client
    /// certificates); the member's own will do.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "ENSEMBLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the node's certificate must carry [default: the host of --addr].
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

/// The TLS settings of the check, with the files read.
fn tls_config(args: &HealthArgs) -> Result<Option<ClientTlsConfig>, String> {
    let Some(ca) = &args.tls_ca else {
        return Ok(None);
    };
    let read = |what: &str, p: &PathBuf| {
        std::fs::read(p).map_err(|e| format!("{what}: can not read {}: {e}", p.display()))
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config = config.identity(Identity::from_pem(
            read("--tls-cert", cert)?,
            read("--tls-key", key)?,
        ));
    }
    if let Some(domain) = &args.tls_domain {
        config = config.domain_name(domain.clone());
    }
    Ok(Some(config))
}

/// Runs the check; the error says why the node is not healthy.
pub async fn check(args: &HealthArgs) -> Result<String, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let tls = tls_config(args)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", args.addr))
        .map_err(|e| format!("bad address {}: {e}", args.addr))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("bad TLS settings: {}", error_chain(&e)))?;
    }
    let endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("node at {} is not live: {}", args.addr, error_chain(&e)))?;
    let status = EnsembleClient::new(channel)
        .status(StatusRequest { with_digest: false })
        .await
        .map_err(|e| format!("node at {} did not answer: {}", args.addr, e.message()))?
        .into_inner();
    let summary = format!(
        "node {} {} leader={} applied={} commit={}",
        status.node_id, status.role, status.leader_id, status.applied_index, status.commit_index
    );
    // A member whose Raft core is gone says "down": it is not live, even
    // though its listener still answers (it exits at once, fail-stop; this
    // covers the moment before it does).
    if status.role == "down" {
        return Err(format!("the Raft core is not running: {summary}"));
    }
    if args.ready && !status.ready {
        return Err(format!("not ready: {summary}"));
    }
    Ok(summary)
}
