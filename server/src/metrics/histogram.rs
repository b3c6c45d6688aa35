//! A histogram of whole numbers (nanoseconds, commands, bytes) kept in
//! atomics: one `fetch_add` for the bucket and one for the sum per
//! observation, no lock and no allocation. prometheus-client's own
//! histogram takes a mutex per observation; this one is read only when
//! scraped, where it is turned into the buckets the encoder wants.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of latency buckets, in nanoseconds: 100 µs to 10 s.
pub(super) const LATENCY_NS: &[u64] = &[
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of election-time buckets, in nanoseconds: 100 ms to 60 s.
pub(super) const ELECTION_NS: &[u64] = &[
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    3_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Upper bounds of count buckets (commands per entry, sessions per
/// heartbeat entry): powers of two up to the largest batch (65536).
pub(super) const COUNTS: &[u64] = &[
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
];

/// Nanoseconds per second: latency histograms observe nanoseconds and
/// export seconds.
pub(super) const NANOS: f64 = 1e9;

/// A histogram with fixed bounds; clones share the counts.
#[derive(Clone, Debug)]
pub(super) struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Ascending upper bounds; `buckets` has one more, for `+Inf`.
    bounds: &'static [u64],
    /// Divides observed values and bounds on export (1e9: nanoseconds to seconds).
    divisor: f64,
    /// Observations per bucket (not cumulative).
    buckets: Box<[AtomicU64]>,
    /// The sum of all observations, in the observed unit.
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending), exported divided by `divisor`.
    pub(super) fn new(bounds: &'static [u64], divisor: f64) -> Self {
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                divisor,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0),
            }),
        }
    }

    /// Records one observation.
    pub(super) fn observe(&self, value: u64) {
        let i = self.inner.bounds.partition_point(|b| *b < value);
        if let Some(bucket) = self.inner.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The number of observations so far.
    #[cfg(test)]
    pub(super) fn count(&self) -> u64 {
        self.inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let counts: Vec<u64> = inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .map(|b| *b as f64 / inner.divisor)
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied())
            .collect();
        // The count is the buckets' total, so `_count` always equals the
        // `+Inf` bucket even while observations race the scrape.
        let count = counts.iter().sum();
        let sum = inner.sum.load(Ordering::Relaxed) as f64 / inner.divisor;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_goes_to_the_first_bucket_whose_bound_is_not_below_it() {
        let h = Histogram::new(&[1, 2, 4], 1.0);
        for v in [0, 1, 2, 3, 4, 5, 100] {
            h.observe(v);
        }
        let counts: Vec<u64> = h
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![2, 1, 2, 2]);
        assert_eq!(h.count(), 7);
        assert_eq!(h.inner.sum.load(Ordering::Relaxed), 115);
    }
}
