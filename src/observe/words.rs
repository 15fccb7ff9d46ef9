//! The wording every rendering shares: sizes, ids, checksums and closes as a person reads them. Logs,
//! explanations, the links table and the text story all take their words from here, so they agree.

use crate::link::{CloseHow, ClosedBy};
use crate::wire::TrailerCheck;

/// Bytes as a person reads them: `1.34 GiB`, `57.9 KiB`, `512 B`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.2} {}", UNITS[unit]) }
}

/// The RDB trailer check in words.
pub fn trailer_words(trailer: Option<TrailerCheck>) -> String {
    match trailer {
        Some(TrailerCheck::Ok { .. }) => "checksum ok".to_string(),
        Some(TrailerCheck::NotComputed) => "checksum not computed by the master".into(),
        Some(TrailerCheck::Mismatch { expected, computed }) => {
            format!("CHECKSUM MISMATCH (trailer {expected:016x}, bytes {computed:016x})")
        }
        Some(TrailerCheck::NoTrailer) => "no RDB trailer".into(),
        Some(TrailerCheck::NotRdb) => "not an RDB (compressed?), not checked".into(),
        None => "incomplete".into(),
    }
}

/// The first 8 characters of a replication id (ids are ASCII), as logs and explanations show it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Who closed, as a label: `master`, `replica`, `proxy`.
pub fn closer(by: ClosedBy) -> &'static str {
    match by {
        ClosedBy::Master => "master",
        ClosedBy::Replica => "replica",
        ClosedBy::Proxy => "proxy",
    }
}

/// How a side ended: `FIN`, `RST`, `error: …`.
pub fn how(how: CloseHow) -> String {
    match how {
        CloseHow::Fin => "FIN".to_string(),
        CloseHow::Reset => "RST".into(),
        CloseHow::Error(kind) => format!("error: {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.50 KiB");
        assert_eq!(human_bytes(1.34 * 1024.0 * 1024.0 * 1024.0), "1.34 GiB");
    }
}
