//! Endpoints: checking `HOST:PORT` strings and making the lazy gRPC
//! channels the session task and the status calls dial through. Nothing
//! connects here; a channel dials when first used.

use std::time::Duration;

use ensemble_proto::v1::ensemble_client::EnsembleClient;
use rand::seq::SliceRandom;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// The largest reply accepted: a listing of many children can be large.
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

/// How long dialing one node may take before the attempt counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazy channel to one endpoint.
pub(crate) fn channel(addr: &str, connect_timeout: Duration) -> Result<EnsembleClient<Channel>> {
    let a = addr.trim();
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
        _ => return Err(Error::BadEndpoint(addr.to_string())),
    }
    let endpoint = Endpoint::from_shared(format!("http://{a}"))
        .map_err(|_| Error::BadEndpoint(addr.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    Ok(EnsembleClient::new(endpoint.connect_lazy()).max_decoding_message_size(MAX_REPLY_BYTES))
}

/// The endpoints in a random order (so clients spread over the nodes),
/// each with its channel.
pub(crate) fn connections(
    endpoints: &[impl AsRef<str>],
) -> Result<(Vec<String>, Vec<EnsembleClient<Channel>>)> {
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
        .map(|e| channel(e, DIAL_TIMEOUT))
        .collect::<Result<Vec<_>>>()?;
    Ok((list, clients))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_must_be_host_and_port() {
        assert!(channel("127.0.0.1:2181", DIAL_TIMEOUT).is_ok());
        for bad in ["127.0.0.1", ":2181", "host:port", "host:99999"] {
            assert!(
                matches!(channel(bad, DIAL_TIMEOUT), Err(Error::BadEndpoint(_))),
                "{bad}"
            );
        }
        assert!(matches!(connections(&[" ", ""]), Err(Error::BadEndpoint(_))));
    }
}
