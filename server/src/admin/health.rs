//! `ensemble-server healthcheck`: asks a node for its status and exits 0 if
//! it is live (answers) or, with `--ready`, ready (in touch with a leader and
//! the majority, and applied up to its commit index). For container health
//! checks, so it needs nothing but this binary.

use std::time::Duration;

use clap::Parser;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::v1::StatusRequest;

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
}

/// Runs the check; the error says why the node is not healthy.
pub async fn check(args: &HealthArgs) -> Result<String, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| format!("bad address {}: {e}", args.addr))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("node at {} is not live: {e}", args.addr))?;
    let status = EnsembleClient::new(channel)
        .status(StatusRequest { with_digest: false })
        .await
        .map_err(|e| format!("node at {} did not answer: {}", args.addr, e.message()))?
        .into_inner();
    let summary = format!(
        "node {} {} leader={} applied={} commit={}",
        status.node_id, status.role, status.leader_id, status.applied_index, status.commit_index
    );
    if args.ready && !status.ready {
        return Err(format!("not ready: {summary}"));
    }
    Ok(summary)
}
