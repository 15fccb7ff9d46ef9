//! Recordings of replication links: JSON Lines, one object per read a byte-forwarding relay made
//! (`tests/data/captures/README.md`): `t` seconds, `conn` number, `dir` (`m2r`/`r2m`), `len`, `hex` bytes,
//! or `eof: true` when that side closed. Reading one is how the core is replayed, by tests and by
//! `replscope replay`.

use crate::link::{CloseHow, ClosedBy, Fed, LinkId, TransportEvent};
use crate::time::Timestamp;
use crate::wire::Direction;

/// One read the relay made, or one side's end of file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// When.
    pub at: Timestamp,
    /// The connection number within the recording.
    pub conn: u32,
    /// Which way the bytes went.
    pub direction: Direction,
    /// The bytes (empty for an end of file).
    pub bytes: Vec<u8>,
    /// This side closed its end.
    pub eof: bool,
}

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a read record.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(serde::Deserialize)]
struct RawRead {
    t: f64,
    conn: u32,
    dir: String,
    len: Option<usize>,
    hex: Option<String>,
    #[serde(default)]
    eof: bool,
}

/// Parses a recording's text.
pub fn parse(text: &str) -> Result<Vec<Read>, RecordingError> {
    let mut reads = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| RecordingError::Line { line: i + 1, reason };
        let raw: RawRead = serde_json::from_str(line).map_err(|e| bad(format!("not a read record: {e}")))?;
        let direction = match raw.dir.as_str() {
            "m2r" => Direction::MasterToReplica,
            "r2m" => Direction::ReplicaToMaster,
            other => return Err(bad(format!("dir is {other:?}, expected \"m2r\" or \"r2m\""))),
        };
        let bytes = match raw.hex {
            Some(h) => hex::decode(h).map_err(|e| bad(format!("hex: {e}")))?,
            None => Vec::new(),
        };
        if let Some(len) = raw.len
            && len != bytes.len()
        {
            return Err(bad(format!("len is {len} but hex holds {} bytes (a truncated recording?)", bytes.len())));
        }
        if !raw.t.is_finite() || raw.t < 0.0 {
            return Err(bad(format!("t is {}, expected seconds ≥ 0", raw.t)));
        }
        reads.push(Read { at: Timestamp::from_secs_f64(raw.t), conn: raw.conn, direction, bytes, eof: raw.eof });
    }
    Ok(reads)
}

/// Reads a recording file.
pub fn load(path: &std::path::Path) -> Result<Vec<Read>, RecordingError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| RecordingError::Io { path: path.display().to_string(), source })?;
    parse(&text)
}

/// Replays reads into one route's links, in order; ends of file become FIN closes by that side.
/// Returns each recording connection's link id, in first-seen order.
pub fn replay(reads: &[Read], links: &mut Fed) -> Vec<(u32, LinkId)> {
    let mut ids: Vec<(u32, LinkId)> = Vec::new();
    for r in reads {
        let id = match ids.iter().find(|(c, _)| *c == r.conn) {
            Some((_, id)) => *id,
            None => {
                let id = links.open(Some([127, 0, 0, 1].into()), r.at);
                ids.push((r.conn, id));
                id
            }
        };
        if r.eof {
            let by = match r.direction {
                Direction::MasterToReplica => ClosedBy::Master,
                Direction::ReplicaToMaster => ClosedBy::Replica,
            };
            links.on_transport(id, TransportEvent::Closed { by, how: CloseHow::Fin }, r.at);
        } else {
            links.on_bytes(id, r.direction, &r.bytes, r.at);
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_rejects_bad_lines_with_their_number() {
        let ok = "{\"t\": 0.5, \"conn\": 1, \"dir\": \"r2m\", \"len\": 2, \"hex\": \"0a0a\"}\n\n{\"t\": 1.0, \"conn\": 1, \"dir\": \"m2r\", \"eof\": true}\n";
        let reads = parse(ok).expect("valid");
        assert_eq!(reads.len(), 2);
        assert_eq!((reads[0].bytes.as_slice(), reads[1].eof), (&b"\n\n"[..], true));
        for (bad, want) in [
            ("{\"t\": 0, \"conn\": 1, \"dir\": \"up\"}", "line 1: dir is \"up\""),
            ("not json", "line 1: not a read record"),
            ("{\"t\": 0, \"conn\": 1, \"dir\": \"m2r\", \"len\": 3, \"hex\": \"00\"}", "line 1: len is 3"),
            ("{\"t\": 0, \"conn\": 1, \"dir\": \"m2r\", \"hex\": \"zz\"}", "line 1: hex"),
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
