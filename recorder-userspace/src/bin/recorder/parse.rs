//! Values of flags that clap cannot parse alone: durations, sizes, the ring's size.

use std::time::Duration;

/// A duration, one syntax everywhere: humantime's (`500ms`, `30s`, `2m`, `1h30m`), or a bare
/// number of seconds (`5`, `0.3`), so `--timeout 5` in existing manifests keeps working.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(seconds) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "{s:?}: {e}; expected a duration such as 500ms, 30s or 1h30m (a bare number is seconds)"
        )
    })
}

/// As [`parse_duration`], zero refused: where a duration of nothing makes no sense (a period,
/// a linger, a timeout, a poll interval).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// A flag's duration that must be more than zero: clap parses it with
/// [`parse_positive_duration`] from its type, so every such flag parses alike without saying so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositiveDuration(pub Duration);

impl std::str::FromStr for PositiveDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_positive_duration(s).map(Self)
    }
}

/// `--ring-bytes`: a size (as [`parse_size`]) that the kernel takes for a ring buffer.
pub fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let bytes = parse_size(s)?;
    // SAFETY: sysconf only reads a system constant.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if !bytes.is_power_of_two() || bytes % page != 0 {
        return Err(format!(
            "{s:?}: must be a power of two and a multiple of the page size ({page}), e.g. 8M"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{s:?}: at most 2G"))
}

/// A size in bytes: a bare number, or with a binary suffix `K`, `M`, `G`, `T` (`KiB`... too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512M or 2G"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (input, want) in [
            ("5", Duration::from_secs(5)),
            ("0.3", Duration::from_millis(300)),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["", "s", "5x", "-1", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        // What clap parses a flag of that type with.
        assert_eq!(
            "1ms".parse(),
            Ok(PositiveDuration(Duration::from_millis(1)))
        );
        assert!("0s".parse::<PositiveDuration>().is_err());
    }

    #[test]
    fn sizes() {
        for (input, want) in [
            ("0", 0),
            ("512", 512),
            ("4K", 4 << 10),
            ("64M", 64 << 20),
            ("2G", 2 << 30),
            ("2GiB", 2 << 30),
            ("1t", 1 << 40),
        ] {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
        for bad in ["", "M", "1.5G", "12X", "-1", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
