//! A client process for tests: opens a session, creates an ephemeral znode,
//! prints `READY <session id> <secret hex> <zxid>` and heartbeats until it is
//! killed. If its session expires it prints `EXPIRED` and exits 3. With
//! `ENSEMBLE_HOLDER_LOG_DIR` set, it also logs its state events there.
//!
//! Usage: ensemble-test-holder ENDPOINTS TIMEOUT_MS PATH

use std::io::Write;
use std::time::Duration;

use ensemble_client::{Client, CreateMode, Options, StateEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoints, timeout_ms, path] = args.as_slice() else {
        anyhow::bail!("usage: ensemble-test-holder ENDPOINTS TIMEOUT_MS PATH");
    };
    let endpoints: Vec<&str> = endpoints.split(',').collect();
    let options = Options {
        session_timeout: Duration::from_millis(timeout_ms.parse()?),
        ..Options::default()
    };
    let client = Client::connect(&endpoints, options).await?;
    let mut events = client.state_events();
    let mut log = std::env::var_os("ENSEMBLE_HOLDER_LOG_DIR").and_then(|dir| {
        let name = path.trim_start_matches('/').replace('/', "_");
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::File::create(std::path::Path::new(&dir).join(format!("{name}.log"))).ok()
    });
    let started = std::time::Instant::now();
    client
        .create(path, b"held".to_vec(), CreateMode::Ephemeral)
        .await?;
    let secret: String = client
        .session()
        .secret
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("READY {} {} {}", client.session_id(), secret, client.last_zxid());
    std::io::stdout().flush()?;
    loop {
        let event = events.recv().await;
        if let Some(f) = log.as_mut() {
            let _ = writeln!(
                f,
                "{} ms {:?} on {}",
                started.elapsed().as_millis(),
                event,
                client.current_endpoint()
            );
        }
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
