//! What the benches share.

// Each bench is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The shortest of `rounds` timed runs of `f`.
pub fn best_of(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Prints a throughput line: `input` bytes in `t`, giving `output` bytes.
pub fn report_throughput(label: &str, input: usize, t: Duration, output: usize) {
    let mb = input as f64 / 1e6;
    println!(
        "{label:26} {:>7.1} MB/s  ({mb:.2} MB in {t:?}, out {:.2} MB)",
        mb / t.as_secs_f64(),
        output as f64 / 1e6
    );
}
