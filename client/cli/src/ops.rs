//! The znode commands (with the ACL ones: `getacl`, `setacl`, `addauth`,
//! `whoami`) and `watch`, as the command line and the shell run them, with
//! the output formats scripts read (`czxid = …`, `WATCH TYPE PATH zxid=N`,
//! `scheme:id:perms`).

use std::io::Write;

use ensemble_client::{Acl, Client, CreateMode, Stat, WatchEvent};

use crate::args::Op;

pub(crate) fn print_stat(out: &mut impl Write, s: &Stat) -> std::io::Result<()> {
    // Decimal zxids and a hex owner, as this tool has always printed them.
    writeln!(out, "czxid = {}", s.czxid.0)?;
    writeln!(out, "mzxid = {}", s.mzxid.0)?;
    writeln!(out, "pzxid = {}", s.pzxid.0)?;
    writeln!(out, "ctime = {}", s.ctime)?;
    writeln!(out, "mtime = {}", s.mtime)?;
    writeln!(out, "version = {}", s.version)?;
    writeln!(out, "cversion = {}", s.cversion)?;
    writeln!(out, "aversion = {}", s.aversion)?;
    writeln!(out, "ephemeralOwner = {}", s.ephemeral_owner.unwrap_or_default())?;
    writeln!(out, "dataLength = {}", s.data_length)?;
    writeln!(out, "numChildren = {}", s.num_children)
}

pub(crate) fn print_event(out: &mut impl Write, e: &WatchEvent) -> std::io::Result<()> {
    writeln!(out, "WATCH {} {} zxid={}", e.kind, e.path, e.zxid.0)
}

/// Parses an ACL argument; a malformed one is `INVALID_ACL`, naming the
/// problem, and nothing is sent.
fn acl_list(text: &str) -> anyhow::Result<Vec<Acl>> {
    Ok(Acl::parse_list(text)?)
}

/// Checks what can be checked before connecting (the ACL arguments), so a
/// malformed command fails without opening a session.
pub(crate) fn check_op(op: &Op) -> anyhow::Result<()> {
    match op {
        Op::Create { acl: Some(acl), .. } | Op::Setacl { acl, .. } => acl_list(acl).map(drop),
        _ => Ok(()),
    }
}

pub(crate) async fn run_op(client: &Client, op: Op, out: &mut impl Write) -> anyhow::Result<()> {
    match op {
        Op::Create {
            ephemeral,
            sequential,
            path,
            data,
            acl,
        } => {
            let acl = acl.as_deref().map(acl_list).transpose()?.unwrap_or_default();
            let mode = match (ephemeral, sequential) {
                (false, false) => CreateMode::Persistent,
                (true, false) => CreateMode::Ephemeral,
                (false, true) => CreateMode::PersistentSequential,
                (true, true) => CreateMode::EphemeralSequential,
            };
            let created = client
                .create_with_acl(&path, data.into_bytes(), mode, &acl)
                .await?;
            writeln!(out, "{created}")?;
        }
        Op::Get { path } => {
            let (data, _) = client.get(&path).await?;
            writeln!(out, "{}", String::from_utf8_lossy(&data))?;
        }
        Op::Set { path, data, version } => {
            client.set(&path, data.into_bytes(), version).await?;
        }
        Op::Delete { path, version } => client.delete(&path, version).await?,
        Op::Ls { path } => {
            for child in client.children(&path).await?.0 {
                writeln!(out, "{child}")?;
            }
        }
        Op::Stat { path } => match client.exists(&path).await? {
            Some(s) => print_stat(out, &s)?,
            None => anyhow::bail!("NO_NODE: {path} does not exist"),
        },
        Op::Sync { path } => client.sync(&path).await?,
        Op::Getacl { path } => {
            for entry in client.get_acl(&path).await?.0 {
                writeln!(out, "{entry}")?;
            }
        }
        Op::Setacl { path, acl, aversion } => {
            client.set_acl(&path, &acl_list(&acl)?, aversion).await?;
        }
        Op::Addauth { scheme, auth } => client.add_auth(&scheme, auth.as_bytes()).await?,
        Op::Whoami => {
            for identity in client.who_am_i().await? {
                writeln!(out, "{identity}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) async fn watch(
    client: &Client,
    path: &str,
    recursive: bool,
    count: Option<usize>,
) -> anyhow::Result<()> {
    let mut w = client.add_watch(path, recursive).await?;
    let mut out = std::io::stdout();
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        match w.next().await {
            Some(e) => {
                print_event(&mut out, &e)?;
                out.flush()?;
                seen += 1;
            }
            None => anyhow::bail!("the session ended ({})", client.state()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ensemble_client::{EventType, SessionId, Zxid};

    use super::*;

    #[test]
    fn stats_and_events_print_as_they_always_have() {
        let stat = Stat {
            czxid: Zxid(10),
            mzxid: Zxid(12),
            pzxid: Zxid(11),
            version: 2,
            ephemeral_owner: Some(SessionId(0x1a0000)),
            data_length: 3,
            ..Stat::default()
        };
        let mut out = Vec::new();
        print_stat(&mut out, &stat).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("czxid = 10\nmzxid = 12\npzxid = 11\n"), "{text}");
        assert!(text.contains("ephemeralOwner = 0x1a0000\n"), "{text}");
        let mut out = Vec::new();
        print_stat(&mut out, &Stat::default()).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("ephemeralOwner = 0x0\n"));

        let mut out = Vec::new();
        let event = WatchEvent {
            kind: EventType::NodeCreated,
            path: "/app/a".into(),
            zxid: Zxid(42),
        };
        print_event(&mut out, &event).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "WATCH NODE_CREATED /app/a zxid=42\n"
        );
    }
}
