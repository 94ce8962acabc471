//! The phi-accrual failure detector (Hayashibara, Défago, Yared, Katayama, SRDS 2004).
//!
//! Instead of a yes/no timeout, it tells *how suspicious* the silence of a peer is: phi is
//! `-log10` of the probability that a heartbeat still arrives this late, given the
//! intervals seen so far (modelled as a normal distribution, as Akka does; Cassandra's
//! `phi_convict_threshold` has the same meaning). phi = 8 means a 1e-8 chance of a false
//! conviction under the model. Heartbeats here are any sign of life: a newer gossip
//! heartbeat of the peer, or any reply from it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::MembershipConfig;

/// One peer's detector.
#[derive(Debug, Clone)]
pub struct PhiAccrualDetector {
    /// The last `window` inter-arrival intervals, in milliseconds.
    intervals: VecDeque<f64>,
    /// The sum and the sum of squares of `intervals`, kept for O(1) mean and variance.
    sum: f64,
    sum_squares: f64,
    /// When the last heartbeat arrived.
    last: Option<Duration>,
    window: usize,
    min_std_dev_ms: f64,
    acceptable_pause_ms: f64,
}

impl PhiAccrualDetector {
    /// A detector that has seen nothing yet, primed with `first_interval` (e.g. the gossip
    /// interval) so that a peer that never speaks is convicted too.
    pub fn new(config: &MembershipConfig, first_heartbeat: Duration) -> Self {
        let mut detector = Self {
            intervals: VecDeque::with_capacity(config.phi_window.min(1024)),
            sum: 0.0,
            sum_squares: 0.0,
            last: Some(first_heartbeat),
            window: config.phi_window.max(2),
            min_std_dev_ms: config.phi_min_std_dev_ms as f64,
            acceptable_pause_ms: config.phi_acceptable_pause_ms as f64,
        };
        // Two samples around the expected interval, as Akka primes its detector.
        let expected = config.gossip_interval_ms as f64;
        detector.record(expected - expected / 4.0);
        detector.record(expected + expected / 4.0);
        detector
    }

    fn record(&mut self, interval_ms: f64) {
        if self.intervals.len() == self.window {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_squares -= old * old;
            }
        }
        self.intervals.push_back(interval_ms);
        self.sum += interval_ms;
        self.sum_squares += interval_ms * interval_ms;
    }

    /// A sign of life at `now`.
    pub fn heartbeat(&mut self, now: Duration) {
        if let Some(last) = self.last {
            let interval = now.saturating_sub(last).as_secs_f64() * 1000.0;
            self.record(interval);
        }
        self.last = Some(now);
    }

    /// A sign of life at `now` that is not a gossip heartbeat (an answered RPC): recorded
    /// only when the last one is at least `min_gap` old, so that a busy peer's thousands
    /// of answers a second do not shrink the intervals the detector expects.
    pub fn heartbeat_at_most_every(&mut self, now: Duration, min_gap: Duration) {
        if self
            .last
            .is_none_or(|last| now.saturating_sub(last) >= min_gap)
        {
            self.heartbeat(now);
        }
    }

    /// The suspicion level at `now`: 0 right after a heartbeat, growing with the silence.
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let elapsed = now.saturating_sub(last).as_secs_f64() * 1000.0;
        let n = self.intervals.len().max(1) as f64;
        let mean = self.sum / n + self.acceptable_pause_ms;
        let variance = (self.sum_squares / n - (self.sum / n).powi(2)).max(0.0);
        let std_dev = variance.sqrt().max(self.min_std_dev_ms);
        // The logistic approximation of the normal CDF (Bowling et al. 2009), as Akka.
        let y = (elapsed - mean) / std_dev;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let phi = if elapsed > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        };
        if phi.is_finite() {
            phi.max(0.0)
        } else {
            f64::MAX
        }
    }

    /// Whether the peer is convicted at `now` under `threshold`.
    pub fn is_down(&self, now: Duration, threshold: f64) -> bool {
        self.phi(now) >= threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_silent_peer_is_convicted_and_a_returning_one_is_up_again() {
        let config = MembershipConfig::default();
        let threshold = config.phi_convict_threshold;
        let mut detector = PhiAccrualDetector::new(&config, ms(0));
        let interval = config.gossip_interval_ms;
        let mut now = 0;
        for _ in 0..30 {
            now += interval;
            detector.heartbeat(ms(now));
            assert!(!detector.is_down(ms(now + interval / 2), threshold));
        }
        // Silence: phi grows monotonically and crosses the threshold.
        let mut convicted_after = None;
        let mut previous = 0.0;
        for silence in (0..60_000).step_by(100) {
            let phi = detector.phi(ms(now + silence));
            assert!(phi >= previous, "phi must not fall during a silence");
            previous = phi;
            if phi >= threshold {
                convicted_after = Some(silence);
                break;
            }
        }
        let convicted_after = convicted_after.expect("a silent peer is convicted");
        assert!(
            convicted_after > interval,
            "not convicted within one interval"
        );
        // It speaks again: no longer down.
        now += convicted_after + 100;
        detector.heartbeat(ms(now));
        assert!(!detector.is_down(ms(now + interval / 2), threshold));
    }

    #[test]
    fn answers_in_a_burst_count_as_one_heartbeat() {
        let config = MembershipConfig::default();
        let mut d = PhiAccrualDetector::new(&config, ms(0));
        let before = d.intervals.len();
        for t in 0..100 {
            d.heartbeat_at_most_every(ms(1000 + t), ms(250));
        }
        assert_eq!(d.intervals.len(), before + 1, "one interval for the burst");
    }

    #[test]
    fn a_peer_that_never_speaks_is_convicted() {
        let config = MembershipConfig::default();
        let detector = PhiAccrualDetector::new(&config, ms(0));
        assert!(!detector.is_down(ms(config.gossip_interval_ms), config.phi_convict_threshold));
        assert!(detector.is_down(ms(60_000), config.phi_convict_threshold));
    }
}
