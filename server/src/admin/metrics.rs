//! The metrics endpoint: `GET /metrics` answers every metric of
//! `crate::metrics` in Prometheus text format 0.0.4; any other path is 404.
//! Served on `--metrics-addr` (default `0.0.0.0:7000`, ZooKeeper's metrics
//! port) unless that is `off`. Gauges whose values live elsewhere (the
//! sizes of the applied state, the watches) are read just before encoding.

use std::future::Future;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::metrics::{self, Refresh};

/// Serves `GET /metrics` on `listener` until `stop` completes; `refresh`
/// reads the gauges kept elsewhere before each scrape.
pub async fn serve(
    listener: TcpListener,
    refresh: Vec<Refresh>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics at /metrics");
    }
    let refresh = Arc::new(refresh);
    let app = Router::new().route("/metrics", get(move || scrape(refresh.clone())));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        warn!(%e, "the metrics endpoint stopped");
    }
}

async fn scrape(refresh: Arc<Vec<Refresh>>) -> Response {
    for read in refresh.iter() {
        read();
    }
    match metrics::render() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            warn!(%e, "can not encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "can not encode the metrics\n").into_response()
        }
    }
}
