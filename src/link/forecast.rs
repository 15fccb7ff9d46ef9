//! During a full sync, the bytes that will have piled up for the replica on the master by the time the
//! transfer ends, and whether that outgrows its `client-output-buffer-limit replica`: the full-resync
//! loop, seen before the master kills the link.
//!
//! From FULLRESYNC on, every write on the master is kept for the replica until the RDB is delivered
//! (PROTOCOL.md §7.1). So at the current rates the pile at the end is
//! `write rate × (elapsed since FULLRESYNC + remaining RDB bytes ÷ transfer rate)`.
//!
//! When introspection reads the replica's buffer on the master (`omem`), the pile is no estimate: the
//! forecast starts from the buffer as read and grows it at the rate the readings grew, which also holds
//! when the master's write rate on the wire and its buffer's growth differ (block rounding, a second
//! replica's writes, commands the stream does not carry).

use crate::link::{Link, Phase};
use crate::size::parse_size;
use crate::time::Timestamp;
use crate::wire::PayloadFraming;

/// `client-output-buffer-limit replica <hard> <soft> <soft seconds>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OutputBufferLimit {
    /// Closed at once above this (0: no hard limit).
    pub hard: u64,
    /// Closed when above this for `soft_seconds` (0: no soft limit).
    pub soft: u64,
    /// How long the soft limit may be exceeded.
    pub soft_seconds: u64,
}

impl OutputBufferLimit {
    /// Parses `"256mb 64mb 60"` as Redis writes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [hard, soft, secs] = parts[..] else {
            return Err(format!("{s:?}: expected \"<hard> <soft> <soft seconds>\", e.g. \"256mb 64mb 60\""));
        };
        Ok(OutputBufferLimit {
            hard: parse_size(hard).map_err(|e| e.to_string())?,
            soft: parse_size(soft).map_err(|e| e.to_string())?,
            soft_seconds: secs.parse().map_err(|_| format!("{secs:?} is not a number of seconds"))?,
        })
    }

    /// Whether a pile of `bytes` that builds up over `seconds` would get the replica closed: above the
    /// hard limit, or above the soft limit for longer than its seconds (counted from when the linear
    /// build-up crosses it).
    pub fn exceeded_by(&self, bytes: f64, seconds: f64) -> bool {
        if self.hard > 0 && bytes > self.hard as f64 {
            return true;
        }
        if self.soft > 0 && bytes > self.soft as f64 && bytes > 0.0 {
            let above_for = seconds * (1.0 - self.soft as f64 / bytes);
            return above_for > self.soft_seconds as f64;
        }
        false
    }
}

/// The forecast for a link in a full sync, given the master's write rate, or `None` when it cannot be
/// told (not in a full sync, no rate yet, no RDB size known).
///
/// `last_rdb_size` stands in for the size of an EOF-framed RDB (unknown until its end): the previous
/// transfer's size to this replica.
pub fn sync_buffer_forecast(
    link: &Link,
    write_rate: Option<f64>,
    last_rdb_size: Option<u64>,
    now: Timestamp,
) -> Option<Forecast> {
    if !matches!(link.phase(), Phase::WaitingBgsave | Phase::RdbTransfer) {
        return None;
    }
    // On two channels the replica reads the stream during the transfer and buffers it itself: nothing
    // piles up against the master's limit (measured on Redis 8.2 and Valkey 8.1/9.1, `tests/loop_matrix.rs`).
    if link.is_two_channel_main() || link.kind == crate::link::LinkKind::RdbChannel {
        return None;
    }
    let granted = link.phase_at(Phase::WaitingBgsave)?;
    let elapsed = now.since(granted).as_secs_f64();
    let rdb = link.rdb.as_ref()?;
    let size = match rdb.framing {
        PayloadFraming::Sized { len } => len,
        PayloadFraming::EofMark => last_rdb_size?,
    };
    let rate = link.rdb_rate(now).filter(|r| *r > 0.0)?;
    let remaining = size.saturating_sub(rdb.transferred) as f64 / rate;
    let total = elapsed + remaining;
    let observed = link.master_view.as_ref().and_then(|v| Some((v.projected(now)?, v.average_growth()?)));
    if let Some((piled_now, growth)) = observed {
        return Some(Forecast {
            bytes: piled_now + growth * remaining,
            seconds: total,
            piled_now,
            basis: Basis::MasterBuffer,
        });
    }
    let write_rate = write_rate?;
    Some(Forecast {
        bytes: write_rate * total,
        seconds: total,
        piled_now: write_rate * elapsed,
        basis: Basis::WriteRate,
    })
}

/// What a forecast grew the pile from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The master's write rate seen on the wire, since FULLRESYNC.
    WriteRate,
    /// The replica's buffer as the master reported it, at the growth its readings showed.
    MasterBuffer,
}

/// What the forecast says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// Bytes piled up for the replica when the transfer ends.
    pub bytes: f64,
    /// Seconds from FULLRESYNC to the end of the transfer.
    pub seconds: f64,
    /// Bytes piled up so far.
    pub piled_now: f64,
    /// What it was grown from.
    pub basis: Basis,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Direction;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    use crate::wire::encode_command as resp;

    #[test]
    fn the_pile_at_the_end_of_the_transfer() {
        let mut l = crate::link::FedLink::new(None, at(0));
        l.on_bytes(Direction::ReplicaToMaster, &resp(&["PSYNC", "?", "-1"]), at(0));
        l.on_bytes(Direction::MasterToReplica, b"+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 0\r\n", at(0));
        assert_eq!(sync_buffer_forecast(&l, Some(1e6), None, at(1000)), None, "no RDB yet");
        // 10 s of fork, then 40 MB at 4 MB/s: 1 MB/s of writes piles up 20 MB by the end (10 s + 10 s).
        l.on_bytes(Direction::MasterToReplica, b"$40000000\r\nREDIS0011", at(10_000));
        l.on_bytes(Direction::MasterToReplica, &vec![0u8; 3_999_991], at(11_000));
        l.on_bytes(Direction::MasterToReplica, &vec![0u8; 4_000_000], at(12_000));
        let f = sync_buffer_forecast(&l, Some(1e6), None, at(12_000)).expect("forecast");
        assert!((f.seconds - 20.0).abs() < 0.01, "{f:?}");
        assert!((f.bytes - 20e6).abs() < 1e4, "{f:?}");
        assert!((f.piled_now - 12e6).abs() < 1.0, "{f:?}");
        assert_eq!(sync_buffer_forecast(&l, None, None, at(12_000)), None, "no write rate yet");
        // The master's readings of the buffer take over: 2 MB at 11 s, 4 MB at 12 s (2 MB/s, not the
        // 1 MB/s the wire suggested), so 4 MB + 2 MB/s × the 8 s left.
        let mut view = crate::link::output_buffer::MasterView::default();
        for (ms, omem) in [(11_000, 2_000_000), (12_000, 4_000_000)] {
            view.record(3, crate::link::output_buffer::BufferSample { at: at(ms), omem, obl: 0, oll: 1 }, 0);
        }
        l.master_view = Some(view);
        let f = sync_buffer_forecast(&l, None, None, at(12_000)).expect("forecast from the master's readings");
        assert_eq!(f.basis, Basis::MasterBuffer);
        assert!((f.bytes - 20e6).abs() < 1e4 && (f.piled_now - 4e6).abs() < 1.0, "{f:?}");
    }

    #[test]
    fn limits_like_redis() {
        let l = OutputBufferLimit::parse("256mb 64mb 60").expect("valid");
        assert_eq!((l.hard, l.soft, l.soft_seconds), (256 << 20, 64 << 20, 60));
        assert!(l.exceeded_by(300e6, 10.0), "over the hard limit");
        assert!(!l.exceeded_by(100e6, 30.0), "over the soft limit, but not for 60 s");
        assert!(l.exceeded_by(100e6, 300.0), "over the soft limit for long enough");
        assert!(OutputBufferLimit::parse("256mb 64mb").is_err());
        assert!(OutputBufferLimit::parse("lots 64mb 60").is_err());
    }
}
