//! Server processes seen through `/proc`: which process serves an
//! endpoint, its CPU time and its resident memory.
//!
//! A server is found by the port of its endpoint: first as the owner of
//! the listening socket on that port (any system, when the benchmark runs
//! on the same host and in the same network namespace), then by the
//! command line of an `ensemble-server` process (`--client-addr`, or
//! `--id` and its entry in `--peers`). Containers publish their ports
//! through a proxy, so give their pids with `--server-pids`.

use std::collections::HashSet;
use std::fs;

use anyhow::{bail, Result};

/// Raises this process's open-file limit to its hard limit: ZooKeeper's
/// and etcd's clients hold a socket per session.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Socket inodes listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Ok(inode) = f[9].parse() {
                    out.insert(inode);
                }
            }
        }
    }
    out
}

fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The process that owns a listening socket on `port`, if any (and not a
/// container runtime's port proxy).
fn listener_pid(port: u16) -> Option<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for pid in pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let inode = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                return (!comm(pid).contains("docker-proxy")).then_some(pid);
            }
        }
    }
    None
}

/// The value of `--name VALUE` or `--name=VALUE` in a command line.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// The client port an `ensemble-server` command line serves, if it says.
fn ensemble_client_port(args: &[String]) -> Option<u16> {
    if let Some(addr) = flag(args, "--client-addr") {
        return port_of(addr);
    }
    let id = flag(args, "--id")?;
    let peers = flag(args, "--peers")?;
    peers.split(',').find_map(|p| {
        let (pid, addrs) = p.split_once('=')?;
        if pid.trim() != id {
            return None;
        }
        port_of(addrs.split_once('/')?.1)
    })
}

/// An `ensemble-server` process whose command line serves `port`.
fn ensemble_pid(port: u16) -> Option<u32> {
    pids().into_iter().find(|&pid| {
        let args = cmdline(pid);
        let is_server = args.first().is_some_and(|a| {
            let name = a.rsplit('/').next().unwrap_or(a);
            name.contains("ensemble") && name.contains("server")
        });
        is_server
            && args.get(1).is_some_and(|a| a != "healthcheck")
            && ensemble_client_port(&args) == Some(port)
    })
}

/// The pid of the server behind each endpoint, or `given` if not empty.
pub fn server_pids(endpoints: &[String], given: &[u32]) -> Result<Vec<u32>> {
    if !given.is_empty() {
        if given.len() != endpoints.len() {
            bail!(
                "--server-pids names {} pids for {} endpoints; give one per endpoint, in the same order",
                given.len(),
                endpoints.len()
            );
        }
        for &pid in given {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("no process {pid} (from --server-pids)");
            }
        }
        return Ok(given.to_vec());
    }
    endpoints.iter().map(|e| server_pid(e)).collect()
}

/// The pid of the server behind one endpoint.
pub fn server_pid(endpoint: &str) -> Result<u32> {
    let Some(port) = port_of(endpoint) else {
        bail!("bad endpoint {endpoint:?}")
    };
    if let Some(pid) = listener_pid(port).or_else(|| ensemble_pid(port)) {
        return Ok(pid);
    }
    bail!(
        "found no local process serving {endpoint} (containers publish ports through a proxy); \
         give the servers' pids with --server-pids"
    )
}

/// A process's CPU time (user + system) in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Some((utime + stime) as f64 / tck)
}

/// A process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn client_port_from_ensemble_command_lines() {
        let peers = "1=127.0.0.1:2881/127.0.0.1:2181,2=127.0.0.1:2882/127.0.0.1:2182";
        let local = args(&format!("ensemble-server --id 2 --peers {peers} --data-dir d"));
        assert_eq!(ensemble_client_port(&local), Some(2182));
        let explicit = args("ensemble-server --id 1 --client-addr=0.0.0.0:2281");
        assert_eq!(ensemble_client_port(&explicit), Some(2281));
        assert_eq!(ensemble_client_port(&args("ensemble-server --id 3")), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
    }
}
