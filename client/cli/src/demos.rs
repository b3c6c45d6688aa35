//! `ensemble elect` and `ensemble lock`: the recipes as command-line demos,
//! printing when leadership or the lock is gained and lost, with the
//! fencing token.

use std::time::Duration;

use ensemble_client::recipes::election::Election;
use ensemble_client::recipes::lock::Lock;
use ensemble_client::{Client, SessionState, StateEvent};

fn recipe_path(kind: &str, name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/ensemble/{kind}/{name}")
    }
}

/// Waits until the session ends; returns how.
async fn until_session_ends(client: &Client) -> &'static str {
    let mut events = client.state_events();
    loop {
        match events.recv().await {
            Ok(StateEvent::Expired) => return "session expired",
            Ok(StateEvent::State(SessionState::Closed)) => return "session closed",
            Ok(StateEvent::State(SessionState::AuthFailed)) => return "authentication failed",
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return "client gone",
        }
    }
}

pub(crate) async fn elect(client: &Client, name: &str, value: String) -> anyhow::Result<()> {
    let election = Election::new(client, &recipe_path("election", name));
    println!("CANDIDATE {name} session={}", client.session_id());
    let leadership = election.campaign(value.into_bytes()).await?;
    println!(
        "LEADER {name} token={} node={}",
        leadership.token(),
        leadership.node()
    );
    tokio::select! {
        why = until_session_ends(client) => {
            println!("LOST {name}: {why}");
            anyhow::bail!("lost leadership of {name}: {why}");
        }
        _ = tokio::signal::ctrl_c() => {
            leadership.resign().await?;
            println!("RESIGNED {name}");
            Ok(())
        }
    }
}

pub(crate) async fn lock(client: &Client, name: &str, hold_ms: Option<u64>) -> anyhow::Result<()> {
    let lock = Lock::new(client, &recipe_path("locks", name));
    println!("WAITING {name} session={}", client.session_id());
    let guard = lock.acquire().await?;
    println!("ACQUIRED {name} token={} node={}", guard.token(), guard.node());
    let hold = async {
        match hold_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        why = until_session_ends(client) => {
            println!("LOST {name}: {why}");
            anyhow::bail!("lost lock {name}: {why}");
        }
        _ = hold => {
            guard.release().await?;
            println!("RELEASED {name}");
            Ok(())
        }
    }
}
