//! Request size limits as clients see them.
//!
//! tonic refuses a message over the decoding limit before any handler runs,
//! with a bare `OUT_OF_RANGE` that clients take for a lost connection
//! ("outcome unknown"), although nothing was applied. [`OversizeLayer`]
//! rewrites that answer into Ensemble's own `BAD_ARGUMENTS`, naming the size
//! and the limit; the session stream does the same for its messages. Only
//! the 5-byte frame header of an oversized message is ever read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::BoxBody;
use tonic::{Code, Status};

use crate::state::Refusal;

/// tonic's message for a message over the decoding limit (tonic 0.12).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// The size tonic found, if `status` is its refusal of an oversized message.
fn oversize(status: &Status) -> Option<usize> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The refusal of a request of `found` bytes.
pub fn too_large(found: usize, limit: usize) -> Refusal {
    Refusal::bad_arguments(format!(
        "request of {found} bytes is larger than the limit of {limit} bytes (max_request_bytes); nothing was applied"
    ))
    .not_applied()
}

/// Ensemble's refusal for tonic's refusal of an oversized message, if it is one.
pub fn rewrite(status: &Status, limit: usize) -> Option<Refusal> {
    oversize(status).map(|found| too_large(found, limit))
}

/// Wraps the client service: see the module comment.
#[derive(Clone, Copy)]
pub struct OversizeLayer {
    /// The decoding limit the service was given.
    pub limit: usize,
}

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`OversizeLayer`] makes.
#[derive(Clone)]
pub struct Oversize<S> {
    inner: S,
    limit: usize,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<BoxBody>, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Oversize<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<BoxBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(request);
        let limit = self.limit;
        Box::pin(async move {
            let response = answer.await?;
            // An error before any message is a trailers-only answer: its
            // status is in the headers.
            let rewritten = Status::from_header_map(response.headers())
                .and_then(|status| rewrite(&status, limit))
                .map(|r| super::refusal::status(r).into_http());
            Ok(rewritten.unwrap_or(response))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_tonics_oversize_refusal() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 2097171 bytes, the limit is: 1081344 bytes",
        );
        let e = rewrite(&tonic, 1_081_344).expect("rewritten");
        assert_eq!(e.code, crate::state::ErrorCode::BadArguments);
        assert!(
            e.message.contains("2097171") && e.message.contains("1081344"),
            "{}",
            e.message
        );
        assert!(rewrite(&Status::out_of_range("something else"), 1).is_none());
        assert!(rewrite(
            &Status::internal("Error, decoded message length too large: found 3 bytes"),
            1
        )
        .is_none());
    }
}
