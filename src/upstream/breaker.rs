//! Each server's circuit breaker (docs/SECURITY.md, resilience): after
//! `breaker_failures` exchanges in a row that timed out, could not connect,
//! broke or answered 5xx, the origin's fragments fail at once; after
//! `breaker_cooldown` one probe goes, and its success closes the circuit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the process's first call (never 0).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Whether an exchange with an origin may go (its circuit breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The circuit is closed.
    Yes,
    /// The circuit is open and its cooldown is over: this one exchange
    /// probes the origin.
    Probe,
    /// The circuit is open: fail at once.
    No,
}

/// One server's circuit breaker.
#[derive(Default)]
pub struct Breaker {
    /// Exchanges in a row that timed out, could not connect, broke or
    /// answered 5xx (an answer below 500 ends the run).
    consecutive: AtomicU64,
    /// 0 while the circuit is closed; else when (`now_ms`) a probe may go.
    open_until: AtomicU64,
    /// A probe is out.
    probing: AtomicBool,
    /// Exchanges refused by the open circuit.
    pub rejected: AtomicU64,
}

impl Breaker {
    /// Failures in a row that count against the origin's health.
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Whether the circuit is open (its fragments fail at once).
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// May an exchange go? With the circuit open, one probe goes once the
    /// cooldown is over; the rest are refused.
    pub fn admit(&self) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Yes;
        }
        if now_ms() >= until
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Admit::Probe;
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Admit::No
    }

    /// Lets another probe go (this one was abandoned, not answered).
    pub fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// The end of an admitted exchange: `healthy` when the origin answered
    /// below 500. A failure that makes `threshold` in a row (0: never), or a
    /// failed probe, opens the circuit for `cooldown`; a healthy answer
    /// closes it.
    pub fn exchange_done(&self, admit: Admit, healthy: bool, threshold: u32, cooldown: Duration) {
        if healthy {
            self.consecutive.store(0, Ordering::Relaxed);
            if admit == Admit::Probe || self.is_open() {
                self.open_until.store(0, Ordering::Release);
                self.probing.store(false, Ordering::Release);
            }
            return;
        }
        let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let trips = threshold > 0 && (admit == Admit::Probe || run >= u64::from(threshold));
        if trips {
            let cooldown = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX / 2);
            self.open_until
                .store(now_ms().saturating_add(cooldown), Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_circuit_opens_after_a_run_of_failures_and_a_probe_closes_it() {
        let s = Breaker::default();
        let cool = Duration::from_millis(40);
        for _ in 0..2 {
            assert_eq!(s.admit(), Admit::Yes);
            s.exchange_done(Admit::Yes, false, 3, cool);
        }
        // A healthy answer ends the run.
        s.exchange_done(Admit::Yes, true, 3, cool);
        for _ in 0..3 {
            assert_eq!(s.admit(), Admit::Yes);
            s.exchange_done(Admit::Yes, false, 3, cool);
        }
        assert!(s.is_open());
        assert_eq!(s.admit(), Admit::No);
        std::thread::sleep(cool + Duration::from_millis(10));
        assert_eq!(s.admit(), Admit::Probe);
        assert_eq!(s.admit(), Admit::No, "one probe at a time");
        // A failed probe opens it again for a whole cooldown.
        s.exchange_done(Admit::Probe, false, 3, cool);
        assert_eq!(s.admit(), Admit::No);
        std::thread::sleep(cool + Duration::from_millis(10));
        assert_eq!(s.admit(), Admit::Probe);
        s.exchange_done(Admit::Probe, true, 3, cool);
        assert!(!s.is_open());
        assert_eq!(s.admit(), Admit::Yes);
        assert_eq!(s.rejected.load(Ordering::Relaxed), 3);
        // threshold 0: never opens.
        let never = Breaker::default();
        for _ in 0..10 {
            never.exchange_done(Admit::Yes, false, 0, cool);
        }
        assert_eq!(never.admit(), Admit::Yes);
    }
}
