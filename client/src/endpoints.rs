//! Endpoints: checking `HOST:PORT` strings and making the lazy gRPC
//! channels the session task and the status calls dial through. Nothing
//! connects here; a channel dials when first used.
//!
//! Sessions of one process share one HTTP/2 connection per endpoint, each
//! session a stream on it (as etcd's client shares one connection among
//! its leases): a connection costs tens of KB and a socket on both ends,
//! a stream a few KB, and heartbeats of many sessions leave in one write.
//! A connection closes when the last session using it is gone.

use std::collections::HashMap;
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

/// A handle on a connection that sessions share. The connection lives as
/// long as any handle does; the registry holds it weakly.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    /// This handle's own clone: a clone carries its own readiness state.
    channel: Channel,
    _held: Arc<Channel>,
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

/// The connections in use in this process, by address, dial timeout and
/// TLS settings (a plaintext and a TLS connection to one address are two).
type Registry = HashMap<(String, Duration, Option<TlsOptions>), Weak<Channel>>;

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The shared connection to `addr`, made (lazily) if none is in use.
fn shared(addr: &str, endpoint: Endpoint, connect_timeout: Duration, tls: Option<&TlsOptions>) -> Shared {
    let mut reg = registry();
    reg.retain(|_, held| held.strong_count() > 0);
    let key = (addr.to_string(), connect_timeout, tls.cloned());
    let held = match reg.get(&key).and_then(Weak::upgrade) {
        Some(held) => held,
        None => {
            let held = Arc::new(endpoint.connect_lazy());
            reg.insert(key, Arc::downgrade(&held));
            held
        }
    };
    Shared {
        channel: (*held).clone(),
        _held: held,
    }
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
}
