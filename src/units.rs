//! Sizes as people write them (`4G`, `1536M`) and the binary units the disk code counts in; and
//! the time now, in the seconds since 1970 that files and records carry.
use anyhow::{bail, Context, Result};

pub const MIB: u64 = 1024 * 1024;

/// Seconds since 1970 (0 on a clock set before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parse `4G`, `1536M`, `2GiB`, `512MB`, `1073741824` (units are powers of 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        bail!("`{text}` is not a size");
    }
    let value: u64 = num
        .parse()
        .with_context(|| format!("`{text}` is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => bail!("`{text}` is not a size: unknown unit `{unit}` (use K, M, G or T)"),
    };
    value
        .checked_mul(1u64 << shift)
        .with_context(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("1536M").unwrap(), 1536 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        let err = |t: &str| format!("{:#}", parse_size(t).unwrap_err());
        assert!(err("big").contains("is not a size"), "{}", err("big"));
        assert!(err("12X").contains("unknown unit `X`"), "{}", err("12X"));
        assert!(err("99999999999999999999T").contains("is not a size"));
        assert!(
            err("99999999T").contains("too large"),
            "{}",
            err("99999999T")
        );
    }
}
