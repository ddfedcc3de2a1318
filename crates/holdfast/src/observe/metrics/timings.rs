//! A histogram whose counts can be read and added to, which prometheus-client's cannot:
//! the probe latencies are carried across `upgrade --self` (the same pid, so no reset
//! Prometheus could tell from a restart).

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use serde::{Deserialize, Serialize};

/// Upper bounds of the buckets: 1 ms to about 8 s, then `+Inf` (implicit).
fn bounds() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14)
}

/// What was observed: the count in each bucket (not cumulative), the last one `+Inf`.
/// The handover's form too, with the finite bounds (`+Inf` has no JSON number), so that
/// the next image can tell its own layout from another one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<u64>,
    /// The buckets' finite upper bounds, in order (absent from an image that did not send
    /// them: then the layout is unknown).
    #[serde(default)]
    pub bounds: Vec<f64>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            sum: 0.0,
            count: 0,
            buckets: vec![0; bounds().count() + 1],
            bounds: bounds().collect(),
        }
    }
}

/// Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct Timings(Arc<Mutex<Counts>>);

impl Timings {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn observe(&self, secs: f64) {
        let mut counts = self.counts();
        counts.sum += secs;
        counts.count += 1;
        let bucket = bounds().take_while(|&bound| secs > bound).count();
        counts.buckets[bucket] += 1;
    }

    pub fn get(&self) -> Counts {
        self.counts().clone()
    }

    /// Adds what another image counted. Buckets of another layout (another version with
    /// other bounds, or one that did not say its bounds) go to `+Inf`: count and sum
    /// must not go back, and every bucket stays cumulative.
    pub fn add(&self, other: &Counts) {
        let mut counts = self.counts();
        counts.sum += other.sum;
        counts.count += other.count;
        if other.bounds == counts.bounds && other.buckets.len() == counts.buckets.len() {
            for (mine, theirs) in counts.buckets.iter_mut().zip(&other.buckets) {
                *mine += theirs;
            }
        } else if let Some(inf) = counts.buckets.last_mut() {
            *inf += other.count;
        }
    }
}

impl TypedMetric for Timings {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timings {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.get();
        let buckets: Vec<(f64, u64)> = bounds()
            .chain([f64::INFINITY])
            .zip(counts.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(counts.sum, counts.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let timings = Timings::default();
        timings.observe(0.001);
        timings.observe(0.0015);
        timings.observe(3600.0);
        let counts = timings.get();
        assert_eq!(counts.count, 3);
        assert_eq!(counts.buckets[0], 1);
        assert_eq!(counts.buckets[1], 1);
        assert_eq!(counts.buckets.last(), Some(&1));
    }

    #[test]
    fn counts_of_another_layout_are_added_to_the_last_bucket() {
        let timings = Timings::default();
        timings.observe(0.002);
        let same = timings.get();
        timings.add(&same);
        assert_eq!(timings.get().buckets[1], 2);
        let other = Counts {
            sum: 1.0,
            count: 4,
            buckets: vec![4],
            bounds: Vec::new(),
        };
        timings.add(&other);
        let counts = timings.get();
        assert_eq!((counts.count, counts.buckets.last()), (6, Some(&4)));
    }

    #[test]
    fn counts_with_as_many_buckets_but_other_bounds_are_added_to_the_last_bucket() {
        let timings = Timings::default();
        timings.observe(0.002);
        let mut other = timings.get();
        for bound in &mut other.bounds {
            *bound *= 10.0;
        }
        timings.add(&other);
        let counts = timings.get();
        assert_eq!(counts.count, 2);
        assert_eq!(counts.buckets[1], 1, "not added where its bounds differ");
        assert_eq!(counts.buckets.last(), Some(&1));
        // Sent without its bounds (by an image that did not send them): unknown, the same.
        other.bounds.clear();
        other.buckets = timings.get().buckets;
        timings.add(&other);
        assert_eq!(timings.get().buckets[1], 1);
    }

    #[test]
    fn the_handover_form_carries_the_bounds_and_the_same_layout_adds_bucket_by_bucket() {
        let timings = Timings::default();
        timings.observe(0.002);
        let json = serde_json::to_string(&timings.get()).expect("serializes");
        let carried: Counts = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(carried.bounds, bounds().collect::<Vec<_>>());
        let next = Timings::default();
        next.add(&carried);
        assert_eq!(next.get(), timings.get());
    }
}
