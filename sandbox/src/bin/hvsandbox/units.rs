//! Sizes and durations on the command line: how they are read and shown.

use std::time::Duration;

/// Parses a byte size: a number with an optional K/M/G suffix (binary units,
/// optional trailing `B`/`iB`).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower);
    let (digits, shift) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 10),
        Some('m') => (&body[..body.len() - 1], 20),
        Some('g') => (&body[..body.len() - 1], 30),
        _ => (body, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("invalid size {s:?} (expected e.g. 64M, 1G, 4096)"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: a number (integer or decimal) with a unit ms, s, m or
/// h; a bare number means seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (expected e.g. 500ms, 2s, 1.5m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "us" => n / 1e6,
        other => return Err(format!("invalid duration unit {other:?} in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is out of range"))
}

/// A byte size on the command line: read by [`parse_size`], shown in the
/// largest unit that holds it whole (`64M`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Size(pub(crate) u64);

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        parse_size(s).map(Size)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        match [(30, "G"), (20, "M"), (10, "K")].into_iter().find(|&(shift, _)| n != 0 && n.is_multiple_of(1 << shift)) {
            Some((shift, unit)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}"),
        }
    }
}

/// A duration on the command line: read by [`parse_duration`], shown in
/// the largest unit that holds it whole (`10s`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Time(pub(crate) Duration);

impl std::str::FromStr for Time {
    type Err = String;
    fn from_str(s: &str) -> Result<Time, String> {
        parse_duration(s).map(Time)
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2MB"), Ok(2 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("18446744073709551615G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2 days").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_are_shown_as_they_are_written() {
        assert_eq!(Size(hvsandbox::DEFAULT_MAX_INPUT).to_string(), "256M");
        assert_eq!(Size(hvsandbox::DEFAULT_MAX_OUTPUT as u64).to_string(), "1M");
        assert_eq!(Size(1 << 30).to_string(), "1G");
        assert_eq!(Size(3 << 10).to_string(), "3K");
        assert_eq!((Size(4097).to_string(), Size(0).to_string()), ("4097".into(), "0".into()));
        assert_eq!(Time(hvsandbox::DEFAULT_TIMEOUT).to_string(), "10s");
        assert_eq!(Time(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Time(Duration::from_micros(7)).to_string(), "7us");
        for text in ["256M", "1M", "1G", "3K", "4097", "0"] {
            assert_eq!(text.parse::<Size>().map(|s| s.to_string()), Ok(text.to_string()));
        }
        for text in ["10s", "1500ms", "7us"] {
            assert_eq!(text.parse::<Time>().map(|t| t.to_string()), Ok(text.to_string()));
        }
    }
}
