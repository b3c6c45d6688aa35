//! `ensemble cluster status`: one line per endpoint, asked without a
//! session, so it works while the cluster can not grant one.

use std::time::Duration;

use ensemble_client::{node_status_tls, TlsOptions};

pub(crate) async fn cluster_status(list: &[String], tls: Option<&TlsOptions>) -> anyhow::Result<()> {
    let mut any = false;
    for ep in list {
        match node_status_tls(ep, Duration::from_secs(2), false, tls).await {
            Ok(s) => {
                any = true;
                println!(
                    "node {} {} {} term={} last_log={} applied={} sessions={} znodes={} leader={}",
                    s.node_id,
                    ep,
                    s.role,
                    s.term,
                    s.last_log_zxid.0,
                    s.applied_zxid.0,
                    s.session_count,
                    s.znode_count,
                    s.leader_id.unwrap_or(0)
                );
            }
            Err(e @ ensemble_client::Error::BadTls(_)) => return Err(e.into()),
            Err(e @ ensemble_client::Error::TlsMismatch(_)) => println!("node ? {ep} {e}"),
            Err(_) => println!("node ? {ep} down"),
        }
    }
    if !any {
        anyhow::bail!("no node answered at {}", list.join(","));
    }
    Ok(())
}
