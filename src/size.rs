//! Human units on the command line: sizes like `256KiB`, `4MiB`, `1gb`, `65536`.

/// Why a size did not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size (examples: 65536, 256KiB, 4MiB, 1GiB)")]
pub struct SizeError {
    input: String,
}

/// Parses a byte size: a number with an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB; case-insensitive;
/// all multiples of 1024, as Redis's own config does).
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError { input: input.to_string() };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("4mb"), Ok(4 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}
