//! A client process for tests: opens a session, creates an ephemeral znode,
//! prints `READY <session id> <secret hex> <zxid>` and heartbeats until it is killed.
//!
//! Usage: ensemble-test-holder ENDPOINTS TIMEOUT_MS PATH

use std::time::Duration;

use ensemble_client::{Client, CreateMode, Options};

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
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
