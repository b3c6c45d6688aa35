//! Endpoints: checking `HOST:PORT` strings and making the lazy gRPC
//! channels the session task and the status calls dial through. Nothing
//! connects here; a channel dials when first used.
//!
//! Sessions of one process share one HTTP/2 connection per endpoint, each
//! session a stream on it (as etcd's client shares one connection among
//! its leases): a connection costs tens of KB and a socket on both ends,
//! a stream a few KB, and heartbeats of many sessions leave in one write.
//! A connection carries at most [`SESSIONS_PER_CONNECTION`] sessions;
//! the next session to that node opens another. A connection closes when
//! the last session using it is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use ensemble_proto::v1::ensemble_client::EnsembleClient;
use rand::seq::SliceRandom;
use tonic::body::BoxBody;
use tonic::codegen::{http, Service};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};
use crate::options::TlsOptions;

/// A connection to one node as the generated client uses it.
pub(crate) type Node = EnsembleClient<Shared>;

/// Sessions one connection carries before the next session to the same
/// node gets a connection of its own: well below the 1 000 streams a node
/// lets one connection open by default, leaving room for the unary calls
/// (probes, status) that share it. So a process with 100 000 sessions uses
/// 200 connections per node, not one that refuses streams.
pub(crate) const SESSIONS_PER_CONNECTION: usize = 500;

/// One connection and how many handles made by [`channel`] (sessions,
/// status calls) use it.
#[derive(Debug)]
struct Conn {
    channel: Channel,
    users: AtomicUsize,
}

/// One user's place on a connection; leaving frees it. The connection
/// lives as long as any seat does; the registry holds it weakly.
#[derive(Debug)]
struct Seat(Arc<Conn>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A handle on a connection that sessions share. Clones of a handle share
/// its seat.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    /// This handle's own clone: a clone carries its own readiness state.
    channel: Channel,
    _seat: Arc<Seat>,
}

impl Service<http::Request<BoxBody>> for Shared {
    type Response = <Channel as Service<http::Request<BoxBody>>>::Response;
    type Error = <Channel as Service<http::Request<BoxBody>>>::Error;
    type Future = <Channel as Service<http::Request<BoxBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        Service::call(&mut self.channel, request)
    }
}

/// The key of a node's connections: address, dial timeout and TLS
/// settings (a plaintext and a TLS connection to one address are two).
type Key = (String, Duration, Option<TlsOptions>);

/// The connections in use in this process, by key.
type Registry = HashMap<Key, Vec<Weak<Conn>>>;

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A seat on a connection to `addr` that has room, made (lazily) if none has.
fn shared(addr: &str, endpoint: Endpoint, connect_timeout: Duration, tls: Option<&TlsOptions>) -> Shared {
    let mut reg = registry();
    reg.retain(|_, conns| {
        conns.retain(|c| c.strong_count() > 0);
        !conns.is_empty()
    });
    let conns = reg
        .entry((addr.to_string(), connect_timeout, tls.cloned()))
        .or_default();
    let roomy = conns
        .iter()
        .filter_map(Weak::upgrade)
        .find(|c| c.users.load(Ordering::Relaxed) < SESSIONS_PER_CONNECTION);
    let conn = match roomy {
        Some(conn) => conn,
        None => {
            let conn = Arc::new(Conn {
                channel: endpoint.connect_lazy(),
                users: AtomicUsize::new(0),
            });
            conns.push(Arc::downgrade(&conn));
            conn
        }
    };
    // Counted under the registry's lock, so two sessions never both take
    // a connection's last seat.
    conn.users.fetch_add(1, Ordering::Relaxed);
    Shared {
        channel: conn.channel.clone(),
        _seat: Arc::new(Seat(conn)),
    }
}

/// How many seats each connection to `addr` has taken (tests).
#[cfg(test)]
fn loads(addr: &str) -> Vec<usize> {
    let reg = registry();
    reg.iter()
        .filter(|(k, _)| k.0 == addr)
        .flat_map(|(_, conns)| conns.iter().filter_map(Weak::upgrade))
        .map(|c| c.users.load(Ordering::Relaxed))
        .collect()
}

/// The largest reply accepted: a listing of many children can be large.
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

/// How long dialing one node may take before the attempt counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazy channel to one endpoint, shared with this process's other
/// sessions; over TLS when `tls` is set.
pub(crate) fn channel(addr: &str, connect_timeout: Duration, tls: Option<&TlsOptions>) -> Result<Node> {
    let a = addr.trim();
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
        _ => return Err(Error::BadEndpoint(addr.to_string())),
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{a}")).map_err(|_| Error::BadEndpoint(addr.to_string()))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls_config(tls))
            .map_err(|e| Error::BadTls(error_chain(&e)))?;
    }
    let endpoint = endpoint.connect_timeout(connect_timeout).tcp_nodelay(true);
    Ok(EnsembleClient::new(shared(a, endpoint, connect_timeout, tls))
        .max_decoding_message_size(MAX_REPLY_BYTES))
}

/// tonic's TLS settings for these options.
fn tls_config(tls: &TlsOptions) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    config
}

/// An error with its causes: tonic's transport error says only
/// "transport error", the reason is in its source.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The endpoints in a random order (so clients spread over the nodes),
/// each with its channel.
pub(crate) fn connections(
    endpoints: &[impl AsRef<str>],
    tls: Option<&TlsOptions>,
) -> Result<(Vec<String>, Vec<Node>)> {
    let mut list: Vec<String> = endpoints
        .iter()
        .map(|e| e.as_ref().trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if list.is_empty() {
        return Err(Error::BadEndpoint(String::new()));
    }
    list.shuffle(&mut rand::thread_rng());
    let clients = list
        .iter()
        .map(|e| channel(e, DIAL_TIMEOUT, tls))
        .collect::<Result<Vec<_>>>()?;
    Ok((list, clients))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_must_be_host_and_port() {
        assert!(channel("127.0.0.1:2181", DIAL_TIMEOUT, None).is_ok());
        for bad in ["127.0.0.1", ":2181", "host:port", "host:99999"] {
            assert!(
                matches!(channel(bad, DIAL_TIMEOUT, None), Err(Error::BadEndpoint(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            connections(&[" ", ""], None),
            Err(Error::BadEndpoint(_))
        ));
    }

    /// A CA file with no certificate in it is the caller's mistake, told
    /// before anything is dialed.
    #[tokio::test]
    async fn garbled_tls_settings_are_refused_up_front() {
        let tls = TlsOptions::new("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        let e = channel("127.0.0.1:2181", DIAL_TIMEOUT, Some(&tls)).unwrap_err();
        assert!(matches!(e, Error::BadTls(_)), "{e:?}");
        let key = TlsOptions::new("").with_identity("c", "SECRET");
        assert!(!format!("{key:?}").contains("SECRET"));
    }

    /// Sessions fill a connection up to the limit, then open another; a
    /// freed seat is taken again before a new connection is made, and the
    /// connections go with their last session.
    #[tokio::test]
    async fn a_full_connection_makes_the_next_session_open_another() {
        let addr = "127.0.0.1:1";
        let mut held: Vec<Node> = (0..2 * SESSIONS_PER_CONNECTION + 1)
            .map(|_| channel(addr, DIAL_TIMEOUT, None).unwrap())
            .collect();
        let mut l = loads(addr);
        l.sort();
        assert_eq!(l, [1, SESSIONS_PER_CONNECTION, SESSIONS_PER_CONNECTION]);
        // A clone shares its session's seat.
        let clones: Vec<Node> = held.iter().take(10).cloned().collect();
        let mut l = loads(addr);
        l.sort();
        assert_eq!(l, [1, SESSIONS_PER_CONNECTION, SESSIONS_PER_CONNECTION]);
        drop(clones);
        // A session leaves the first connection; the next one takes its seat.
        held.remove(0);
        held.push(channel(addr, DIAL_TIMEOUT, None).unwrap());
        let mut l = loads(addr);
        l.sort();
        assert_eq!(l, [1, SESSIONS_PER_CONNECTION, SESSIONS_PER_CONNECTION]);
        // Another address, or TLS settings, is another connection.
        let other = channel("127.0.0.1:2", DIAL_TIMEOUT, None).unwrap();
        assert_eq!(loads("127.0.0.1:2"), [1]);
        drop(other);
        assert!(loads("127.0.0.1:2").is_empty());
        held.truncate(SESSIONS_PER_CONNECTION);
        let total: usize = loads(addr).iter().sum();
        assert_eq!(total, SESSIONS_PER_CONNECTION);
        held.clear();
        assert!(loads(addr).is_empty(), "{:?}", loads(addr));
    }
}
