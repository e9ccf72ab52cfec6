//! The one number formatter of the binary's human output: durations, counts, byte sizes
//! (dashboards, text reports, compare's table and plots, export's summary). JSON output
//! never goes through here: it carries the raw numbers.

/// A duration the way `perf lock contention` prints it (`812 ns`, `3.40 us`, `1.25 ms`).
pub fn ns(v: u64) -> String {
    refgate_common::trace::summary::fmt_ns(v)
}

/// `1234567` → `1.23M`: a rate or count with an SI suffix, for narrow dashboard columns.
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A file size: bytes below 10 KiB, then KiB below 10 MiB, then MiB (one decimal).
pub fn bytes(n: u64) -> String {
    if n < 10 * 1024 {
        format!("{n} bytes")
    } else if n < 10 * 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else if n < 10 << 30 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30))
    }
}

/// Seconds as milliseconds with three decimals (compare's table).
pub fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_switches_at_its_threshold() {
        assert_eq!(ns(999), "999 ns");
        assert_eq!(ns(1_500), "1.50 us");
        assert_eq!(ns(2_000_000), "2.00 ms");
        assert_eq!(si(9_999.0), "9999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(-2.5e9), "-2.50G");
        assert_eq!(bytes(10 * 1024 - 1), "10239 bytes");
        assert_eq!(bytes(10 * 1024), "10.0 KiB");
        assert_eq!(bytes(20 << 20), "20.0 MiB");
        assert_eq!(ms(0.0125), "12.500");
    }
}
