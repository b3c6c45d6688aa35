//! `ensemble shell`: a prompt that keeps one session open, reading
//! commands line by line (also from a pipe) and printing the events of its
//! watches between commands.

use std::io::{BufRead, IsTerminal, Write};

use clap::Parser;
use ensemble_client::{Client, PersistentWatch};

use crate::args::{ShellCommand, ShellLine};
use crate::ops::{print_event, run_op};

pub(crate) async fn shell(client: Client) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = std::io::stdout();
    let mut watches: Vec<(String, PersistentWatch)> = Vec::new();
    let prompt = |out: &mut std::io::Stdout, c: &Client| {
        if interactive {
            let _ = write!(out, "[{} {}] ensemble> ", c.state(), c.session_id());
            let _ = out.flush();
        }
    };
    prompt(&mut out, &client);
    let mut lines = stdin.lock().lines();
    while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
        let line = line?;
        let trimmed = line.trim();
        if !(trimmed.is_empty() || trimmed.starts_with('#')) {
            match shlex::split(trimmed).map(ShellLine::try_parse_from) {
                None => eprintln!("error: unbalanced quotes in {trimmed:?}"),
                Some(Err(e)) => eprintln!("{}", e.to_string().trim_end()),
                Some(Ok(ShellLine { command })) => match command {
                    ShellCommand::Quit => break,
                    ShellCommand::Session => writeln!(
                        out,
                        "session {} {} on {}",
                        client.session_id(),
                        client.state(),
                        client.current_endpoint()
                    )?,
                    ShellCommand::Watch { path, recursive } => match client.add_watch(&path, recursive).await
                    {
                        Ok(w) => watches.push((path, w)),
                        Err(e) => eprintln!("error: {e}"),
                    },
                    ShellCommand::Unwatch { path } => {
                        watches.retain(|(p, _)| *p != path);
                        if let Err(e) = client.remove_watches(&path, None).await {
                            eprintln!("error: {e}");
                        }
                    }
                    ShellCommand::Op(op) => {
                        if let Err(e) = run_op(&client, op, &mut out).await {
                            eprintln!("error: {e}");
                        }
                    }
                },
            }
        }
        // Events of the changes so far arrived before their replies: print them now.
        for (_, w) in watches.iter_mut() {
            while let Some(e) = w.try_next() {
                print_event(&mut out, &e)?;
            }
        }
        out.flush()?;
        if client.state().is_terminal() {
            anyhow::bail!("the session ended ({}): open a new shell", client.state());
        }
        prompt(&mut out, &client);
    }
    client.close().await?;
    Ok(())
}
