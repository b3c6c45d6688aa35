//! A client process for tests: opens a session, creates an ephemeral znode,
//! prints `READY <session id> <secret hex> <zxid>` and heartbeats until it is
//! killed. If its session expires it prints `EXPIRED` and exits 3. With
//! `ENSEMBLE_HOLDER_LOG_DIR` set, it logs its state events there, with the
//! client library's debug log (UTC times, to line up with the nodes' logs).
//!
//! Usage: ensemble-test-holder ENDPOINTS TIMEOUT_MS PATH

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use ensemble_client::{Client, CreateMode, Options, StateEvent};
use ensemble_tests::fault::options_from_env;
use tracing::info;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoints, timeout_ms, path] = args.as_slice() else {
        anyhow::bail!("usage: ensemble-test-holder ENDPOINTS TIMEOUT_MS PATH");
    };
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    // TLS and credentials for a secure cluster, from the environment
    // (ENSEMBLE_TLS_*, ENSEMBLE_USER / ENSEMBLE_PASSWORD; see options_from_env).
    let options = options_from_env(Options {
        session_timeout: Duration::from_millis(timeout_ms.parse()?),
        ..Options::default()
    })?;
    if let Some(dir) = std::env::var_os("ENSEMBLE_HOLDER_LOG_DIR") {
        let name = path.trim_start_matches('/').replace('/', "_");
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::File::create(std::path::Path::new(&dir).join(format!("{name}.log")))?;
        tracing_subscriber::fmt()
            .with_env_filter("ensemble_client=debug,ensemble_test_holder=info")
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .init();
    }
    let client = Client::connect(&endpoints, options).await?;
    let mut events = client.state_events();
    info!(session = %client.session_id(), endpoint = client.current_endpoint(), "connected");
    client
        .create(path, b"held".to_vec(), CreateMode::Ephemeral)
        .await?;
    let secret: String = client
        .session()
        .secret
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Decimal numbers: the harness and the fault workload parse them.
    println!(
        "READY {} {} {}",
        client.session_id().0,
        secret,
        client.last_zxid().0
    );
    std::io::stdout().flush()?;
    loop {
        let event = events.recv().await;
        info!(?event, endpoint = client.current_endpoint(), "state event");
        match event {
            Ok(StateEvent::Expired) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                println!("EXPIRED");
                std::io::stdout().flush()?;
                std::process::exit(3);
            }
            _ => {}
        }
    }
}
