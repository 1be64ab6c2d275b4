//! Parsing of the human units used in the configuration and in fragment
//! attributes: durations (`"250ms"`, `"2s"`, `"30m"`, `"1h"`) and sizes
//! (`"512B"`, `"32KiB"`, `"2MiB"`). Pure functions, no I/O.

use std::time::Duration;

/// Parses a duration such as `"250ms"`, `"2s"`, `"1.5s"`, `"30m"` or `"1h"`.
///
/// The unit is required: a bare number is ambiguous in a config file. (Fragment
/// `timeout` attributes accept bare milliseconds; see [`parse_timeout_attr`].)
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("`{text}` has no unit; write it like \"250ms\", \"2s\" or \"30m\"")
        })?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("`{text}` is not a duration; write it like \"250ms\", \"2s\" or \"30m\"")
    })?;
    let millis = match unit.trim() {
        "ms" => value,
        "s" => value * 1_000.0,
        "m" | "min" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`; use ms, s, m or h"
            ))
        }
    };
    if !millis.is_finite() || !(0.0..=1e12).contains(&millis) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_micros((millis * 1_000.0).round() as u64))
}

/// Parses a fragment's `timeout` attribute: a duration with a unit, or a bare
/// number of milliseconds as Tailor templates write it (`timeout="3000"`).
pub fn parse_timeout_attr(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{text}` is out of range"));
    }
    parse_duration(t)
}

/// Parses a size such as `"512B"`, `"32KiB"`, `"2MiB"`, `"1GiB"` (also `KB`,
/// `MB`, taken as powers of 1000) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write it like \"32KiB\" or \"2MiB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`; use B, KiB, MiB or GiB"
            ))
        }
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("250").is_err());
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn timeout_attributes() {
        assert_eq!(parse_timeout_attr("3000"), Ok(Duration::from_millis(3000)));
        assert_eq!(parse_timeout_attr("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout_attr("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("32KiB"), Ok(32 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert!(parse_size("2 lots").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
