//! Every client request counted and timed in one place: the unary methods
//! and the session stream both serve a [`SessionCall`] through [`call`],
//! and session setup through [`record`], so `crate::metrics` sees each
//! request once, with its operation, latency and refusal code. When
//! scraped, [`scrape_gauges`] reads the session streams and watches here.

use std::future::Future;
use std::sync::Arc;

use super::calls::{Caller, SessionCall};
use super::service::ClientService;
use super::watches::WatchHub;
use crate::metrics::{self, Op};
use crate::state::Refusal;

/// Serves one session call (`SessionCall::call`) and records it.
pub(crate) async fn call<C: SessionCall>(
    request: C,
    svc: &ClientService,
    caller: Caller,
) -> Result<C::Reply, Refusal> {
    record(C::METRIC, request.call(svc, caller)).await
}

/// Records request `op` whose answer `answer` yields.
pub(crate) async fn record<T>(
    op: Op,
    answer: impl Future<Output = Result<T, Refusal>>,
) -> Result<T, Refusal> {
    let request = metrics::request(op);
    let answer = answer.await;
    request.finish(answer.as_ref().err().map(|r| r.code.name()));
    answer
}

/// Reads, when scraped, how many session streams and watches this member holds.
pub(crate) fn scrape_gauges(watches: &Arc<WatchHub>) -> metrics::Refresh {
    let watches = watches.clone();
    Box::new(move || {
        let (streams, count) = watches.sizes();
        metrics::watch_sizes(streams as u64, count as u64);
    })
}
