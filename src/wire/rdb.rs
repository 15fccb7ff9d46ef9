//! What replscope reads of an RDB payload in flight: the magic and version, the AUX fields from a bounded
//! look-ahead, and the trailer (`0xFF` + CRC-64/Jones, little-endian) checked against a running SIMD CRC.
//!
//! The inspector is fed the payload bytes (framing already removed) in slices of any size. It keeps at
//! most [`HEADER_LOOKAHEAD`] bytes of the beginning and the last 8 bytes; everything else is looked at in
//! place and dropped. It never fails: what it cannot read is reported, never raised.

use crc_fast::{CrcAlgorithm, Digest};

/// How many leading payload bytes are kept to read the header and AUX fields. Masters write about a
/// dozen small AUX fields (under 300 bytes); the rest of the look-ahead is slack for modules' AUX.
pub const HEADER_LOOKAHEAD: usize = 4096;

/// The magic at the start of an RDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RdbMagic {
    /// `REDIS` + 4 digits (Redis, and Valkey for versions ≤ 79).
    Redis,
    /// `VALKEY` + 3 digits (Valkey ≥ 9.0).
    Valkey,
}

/// The AUX fields a master writes at the start of a replication RDB (those replscope reports).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RdbAux {
    /// `redis-ver`.
    pub redis_ver: Option<String>,
    /// `valkey-ver` (Valkey 7.2.4+).
    pub valkey_ver: Option<String>,
    /// `redis-bits`.
    pub redis_bits: Option<i64>,
    /// `ctime`, unix seconds.
    pub ctime: Option<i64>,
    /// `used-mem`, bytes.
    pub used_mem: Option<i64>,
    /// `repl-stream-db`.
    pub repl_stream_db: Option<i64>,
    /// `repl-id`.
    pub repl_id: Option<String>,
    /// `repl-offset`.
    pub repl_offset: Option<i64>,
    /// `aof-base` (7.0+).
    pub aof_base: Option<i64>,
    /// `aof-preamble` (4.0–6.2).
    pub aof_preamble: Option<i64>,
}

/// The header of an RDB.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RdbHeader {
    /// Which magic it starts with.
    pub magic: RdbMagic,
    /// The RDB format version (9 for Redis 6.2, 10 for 7.0, 11 for 7.2/Valkey 8, 80 for Valkey 9 …).
    pub version: u16,
    /// The AUX fields that were read.
    pub aux: RdbAux,
    /// Whether the AUX section ended inside the look-ahead (false: the fields shown may be partial).
    pub complete: bool,
}

impl RdbHeader {
    /// The server version the AUX fields announce (`valkey-ver` before `redis-ver`).
    pub fn server_version(&self) -> Option<&str> {
        self.aux.valkey_ver.as_deref().or(self.aux.redis_ver.as_deref())
    }
}

/// A 64-bit checksum as 16 hex digits: JSON numbers lose integers past 2^53 in most readers.
fn hex64<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:016x}"))
}

/// The outcome of the trailer check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TrailerCheck {
    /// The trailer matched the bytes forwarded.
    Ok {
        /// The checksum (hex in JSON: 64 bits do not survive a JSON number).
        #[serde(serialize_with = "hex64")]
        crc: u64,
    },
    /// The trailer was all zeros: the writer did not compute it (`rdbchecksum no`).
    NotComputed,
    /// The trailer did not match.
    Mismatch {
        /// What the trailer said.
        #[serde(serialize_with = "hex64")]
        expected: u64,
        /// What the bytes hash to.
        #[serde(serialize_with = "hex64")]
        computed: u64,
    },
    /// The payload did not end in `0xFF` + 8 bytes (cut short, or not a complete RDB).
    NoTrailer,
    /// The payload is not an RDB, so nothing was checked.
    NotRdb,
}

/// What the first bytes turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unknown,
    Rdb,
    NotRdb,
}

/// Reads one RDB payload as it flows past.
pub struct RdbInspector {
    lookahead: Vec<u8>,
    kind: Kind,
    header_reported: bool,
    crc: Digest,
    hold: [u8; 8],
    hold_len: usize,
    last_fed: Option<u8>,
    total: u64,
}

impl std::fmt::Debug for RdbInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdbInspector").field("kind", &self.kind).field("total", &self.total).finish_non_exhaustive()
    }
}

impl Default for RdbInspector {
    fn default() -> Self {
        Self::new()
    }
}

/// What the inspector has to say after a slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// The header, once read.
    Header(RdbHeader),
    /// The payload does not start like an RDB; up to 9 bytes of its start.
    NotRdb(Vec<u8>),
}

impl RdbInspector {
    /// A fresh inspector for one payload.
    pub fn new() -> Self {
        RdbInspector {
            lookahead: Vec::new(),
            kind: Kind::Unknown,
            header_reported: false,
            crc: Digest::new(CrcAlgorithm::Crc64Redis),
            hold: [0; 8],
            hold_len: 0,
            last_fed: None,
            total: 0,
        }
    }

    /// Payload bytes seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Looks at the next payload bytes. Returns the header (or the verdict that this is no RDB) on the slice
    /// where it becomes known.
    pub fn feed(&mut self, data: &[u8]) -> Option<Finding> {
        if data.is_empty() {
            return None;
        }
        self.total += data.len() as u64;
        let finding = if self.header_reported { None } else { self.look(data, false) };
        if self.kind != Kind::NotRdb {
            self.checksum(data);
        }
        finding
    }

    /// The payload is complete: report the header if it was not yet, and check the trailer.
    pub fn finish(&mut self) -> (Option<Finding>, TrailerCheck) {
        let finding = if self.header_reported { None } else { self.look(&[], true) };
        let check = match self.kind {
            Kind::NotRdb => TrailerCheck::NotRdb,
            Kind::Unknown => TrailerCheck::NoTrailer,
            Kind::Rdb if self.hold_len < 8 || self.last_fed != Some(0xFF) => TrailerCheck::NoTrailer,
            Kind::Rdb => {
                let expected = u64::from_le_bytes(self.hold);
                if expected == 0 {
                    TrailerCheck::NotComputed
                } else {
                    let computed = self.crc.finalize();
                    if computed == expected {
                        TrailerCheck::Ok { crc: computed }
                    } else {
                        TrailerCheck::Mismatch { expected, computed }
                    }
                }
            }
        };
        (finding, check)
    }

    /// Adds to the look-ahead and tries to read the header.
    fn look(&mut self, data: &[u8], at_end: bool) -> Option<Finding> {
        let room = HEADER_LOOKAHEAD - self.lookahead.len();
        self.lookahead.extend_from_slice(&data[..data.len().min(room)]);
        let full = self.lookahead.len() == HEADER_LOOKAHEAD;
        if self.kind == Kind::Unknown {
            match magic(&self.lookahead) {
                // Wait for 9 bytes either way, so the reported prefix does not depend on the split.
                Magic::NeedMore | Magic::NotRdb if !at_end && !full && self.lookahead.len() < 9 => return None,
                Magic::NeedMore | Magic::NotRdb => {
                    self.kind = Kind::NotRdb;
                    self.header_reported = true;
                    let prefix = self.lookahead[..self.lookahead.len().min(9)].to_vec();
                    self.lookahead = Vec::new();
                    return Some(Finding::NotRdb(prefix));
                }
                Magic::Rdb(..) => self.kind = Kind::Rdb,
            }
        }
        let Magic::Rdb(magic, version) = magic(&self.lookahead) else {
            return None;
        };
        let (aux, outcome) = parse_aux(&self.lookahead[9..]);
        let complete = match outcome {
            AuxOutcome::Ended => true,
            AuxOutcome::Unreadable => false,
            AuxOutcome::NeedMore if at_end || full => false,
            AuxOutcome::NeedMore => return None,
        };
        self.header_reported = true;
        self.lookahead = Vec::new();
        Some(Finding::Header(RdbHeader { magic, version, aux, complete }))
    }

    /// Feeds the CRC with everything but the last 8 bytes seen, which may be the trailer.
    fn checksum(&mut self, data: &[u8]) {
        let n = data.len();
        if n >= 8 {
            if self.hold_len > 0 {
                self.crc.update(&self.hold[..self.hold_len]);
                self.last_fed = Some(self.hold[self.hold_len - 1]);
            }
            let body = &data[..n - 8];
            if let Some(&last) = body.last() {
                self.crc.update(body);
                self.last_fed = Some(last);
            }
            self.hold.copy_from_slice(&data[n - 8..]);
            self.hold_len = 8;
        } else {
            let total = self.hold_len + n;
            if total > 8 {
                let release = total - 8;
                self.crc.update(&self.hold[..release]);
                self.last_fed = Some(self.hold[release - 1]);
                self.hold.copy_within(release..self.hold_len, 0);
                self.hold_len -= release;
            }
            self.hold[self.hold_len..self.hold_len + n].copy_from_slice(data);
            self.hold_len += n;
        }
    }
}

enum Magic {
    NeedMore,
    NotRdb,
    Rdb(RdbMagic, u16),
}

fn magic(buf: &[u8]) -> Magic {
    const CANDIDATES: [(&[u8], RdbMagic); 2] = [(b"REDIS", RdbMagic::Redis), (b"VALKEY", RdbMagic::Valkey)];
    for (prefix, kind) in CANDIDATES {
        let head = &buf[..buf.len().min(prefix.len())];
        if !prefix.starts_with(head) {
            continue;
        }
        if buf.len() < 9 {
            return Magic::NeedMore;
        }
        let digits = &buf[prefix.len()..9];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Magic::NotRdb;
        }
        let version = digits.iter().fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
        return Magic::Rdb(kind, version);
    }
    Magic::NotRdb
}

enum AuxOutcome {
    /// A non-AUX opcode follows the AUX fields.
    Ended,
    /// The look-ahead ends inside the AUX fields.
    NeedMore,
    /// An encoding replscope does not read.
    Unreadable,
}

/// An RDB string value, as far as the header needs it.
enum Str<'a> {
    Bytes(&'a [u8]),
    Int(i64),
    Compressed,
}

/// A cursor over the look-ahead; `None` means "ran out of bytes".
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// `Some(Err(()))`: unreadable encoding; `None`: need more bytes.
type Step<T> = Option<Result<T, ()>>;

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A length (`Ok(Ok(len))`) or a special string encoding (`Ok(Err(enc))`).
    fn length(&mut self) -> Step<Result<u64, u8>> {
        let first = self.byte()?;
        Some(Ok(match first >> 6 {
            0 => Ok(u64::from(first & 0x3F)),
            1 => Ok((u64::from(first & 0x3F) << 8) | u64::from(self.byte()?)),
            2 if first == 0x80 => Ok(u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?))),
            2 if first == 0x81 => Ok(u64::from_be_bytes(self.take(8)?.try_into().ok()?)),
            2 => return Some(Err(())),
            _ => Err(first & 0x3F),
        }))
    }

    fn string(&mut self) -> Step<Str<'a>> {
        let len = match self.length()? {
            Ok(len) => len,
            Err(()) => return Some(Err(())),
        };
        Some(Ok(match len {
            Ok(n) => Str::Bytes(self.take(usize::try_from(n).ok()?)?),
            Err(0) => Str::Int(i64::from(self.take(1)?[0] as i8)),
            Err(1) => Str::Int(i64::from(i16::from_le_bytes(self.take(2)?.try_into().ok()?))),
            Err(2) => Str::Int(i64::from(i32::from_le_bytes(self.take(4)?.try_into().ok()?))),
            Err(3) => {
                let clen = match self.length()? {
                    Ok(Ok(n)) => n,
                    _ => return Some(Err(())),
                };
                match self.length()? {
                    Ok(Ok(_)) => {}
                    _ => return Some(Err(())),
                }
                self.take(usize::try_from(clen).ok()?)?;
                Str::Compressed
            }
            Err(_) => return Some(Err(())),
        }))
    }
}

const OPCODE_AUX: u8 = 0xFA;

fn parse_aux(buf: &[u8]) -> (RdbAux, AuxOutcome) {
    let mut aux = RdbAux::default();
    let mut cur = Cursor { buf, pos: 0 };
    loop {
        match buf.get(cur.pos) {
            None => return (aux, AuxOutcome::NeedMore),
            Some(&OPCODE_AUX) => cur.pos += 1,
            Some(_) => return (aux, AuxOutcome::Ended),
        }
        let key = match cur.string() {
            None => return (aux, AuxOutcome::NeedMore),
            Some(Err(())) => return (aux, AuxOutcome::Unreadable),
            Some(Ok(key)) => key,
        };
        let value = match cur.string() {
            None => return (aux, AuxOutcome::NeedMore),
            Some(Err(())) => return (aux, AuxOutcome::Unreadable),
            Some(Ok(value)) => value,
        };
        if let Str::Bytes(key) = key {
            apply_aux(&mut aux, key, &value);
        }
    }
}

fn apply_aux(aux: &mut RdbAux, key: &[u8], value: &Str<'_>) {
    let text = || match value {
        Str::Bytes(b) => Some(String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()),
        Str::Int(i) => Some(i.to_string()),
        Str::Compressed => None,
    };
    let int = || match value {
        Str::Int(i) => Some(*i),
        Str::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Str::Compressed => None,
    };
    match key {
        b"redis-ver" => aux.redis_ver = text(),
        b"valkey-ver" => aux.valkey_ver = text(),
        b"redis-bits" => aux.redis_bits = int(),
        b"ctime" => aux.ctime = int(),
        b"used-mem" => aux.used_mem = int(),
        b"repl-stream-db" => aux.repl_stream_db = int(),
        b"repl-id" => aux.repl_id = text(),
        b"repl-offset" => aux.repl_offset = int(),
        b"aof-base" => aux.aof_base = int(),
        b"aof-preamble" => aux.aof_preamble = int(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal RDB: magic, two AUX fields, SELECTDB 0, one string key, EOF, CRC.
    fn rdb(crc: Option<u64>) -> Vec<u8> {
        let mut v = b"REDIS0011".to_vec();
        v.extend_from_slice(b"\xfa\x09redis-ver\x057.2.4");
        v.extend_from_slice(b"\xfa\x0aredis-bits\xc0\x40");
        v.extend_from_slice(b"\xfe\x00\x00\x01k\x01v\xff");
        let sum = crc.unwrap_or_else(|| crc_fast::checksum(CrcAlgorithm::Crc64Redis, &v));
        v.extend_from_slice(&sum.to_le_bytes());
        v
    }

    fn run(bytes: &[u8], chunk: usize) -> (Vec<Finding>, TrailerCheck) {
        let mut ins = RdbInspector::new();
        let mut found: Vec<Finding> = bytes.chunks(chunk.max(1)).filter_map(|c| ins.feed(c)).collect();
        let (f, check) = ins.finish();
        found.extend(f);
        (found, check)
    }

    #[test]
    fn header_and_trailer_are_read_whatever_the_split() {
        let bytes = rdb(None);
        for chunk in [1, 2, 3, 7, 8, 9, 10, bytes.len()] {
            let (found, check) = run(&bytes, chunk);
            assert!(matches!(check, TrailerCheck::Ok { .. }), "chunk {chunk}: {check:?}");
            let [Finding::Header(h)] = &found[..] else { panic!("chunk {chunk}: {found:?}") };
            assert_eq!((h.magic, h.version, h.complete), (RdbMagic::Redis, 11, true));
            assert_eq!(h.aux.redis_ver.as_deref(), Some("7.2.4"));
            assert_eq!(h.aux.redis_bits, Some(64));
        }
    }

    #[test]
    fn crc_matches_the_reference_implementation() {
        let oracle = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert_eq!(crc_fast::checksum(CrcAlgorithm::Crc64Redis, &data), oracle.checksum(&data));
        assert_eq!(crc_fast::checksum(CrcAlgorithm::Crc64Redis, b"123456789"), 0xE9C6_D914_C4B8_D9CA);
    }

    #[test]
    fn zero_trailer_means_not_computed_and_a_wrong_one_is_a_mismatch() {
        assert_eq!(run(&rdb(Some(0)), 5).1, TrailerCheck::NotComputed);
        assert!(matches!(run(&rdb(Some(42)), 5).1, TrailerCheck::Mismatch { expected: 42, .. }));
    }

    #[test]
    fn a_cut_payload_has_no_trailer() {
        let bytes = rdb(None);
        assert_eq!(run(&bytes[..bytes.len() - 3], 4).1, TrailerCheck::NoTrailer);
        assert_eq!(run(b"RED", 1).1, TrailerCheck::NotRdb);
    }

    #[test]
    fn a_compressed_envelope_is_not_an_rdb() {
        let (found, check) = run(b"VCS\x01\x02\x00\x01somecompressedbytes", 3);
        assert_eq!(found, vec![Finding::NotRdb(b"VCS\x01\x02\x00\x01so".to_vec())]);
        assert_eq!(check, TrailerCheck::NotRdb);
    }

    #[test]
    fn unreadable_aux_encoding_still_reports_the_version() {
        let mut v = b"VALKEY080\xfa\x09redis-ver\x8f".to_vec();
        v.extend_from_slice(&[0u8; 20]);
        let (found, _) = run(&v, 4);
        let [Finding::Header(h)] = &found[..] else { panic!("{found:?}") };
        assert_eq!((h.magic, h.version, h.complete), (RdbMagic::Valkey, 80, false));
    }

    #[test]
    fn a_long_aux_section_is_bounded_by_the_lookahead() {
        let mut v = b"REDIS0010".to_vec();
        while v.len() < HEADER_LOOKAHEAD + 100 {
            v.extend_from_slice(b"\xfa\x03foo\x03bar");
        }
        let mut ins = RdbInspector::new();
        let found: Vec<Finding> = v.chunks(1000).filter_map(|c| ins.feed(c)).collect();
        let [Finding::Header(h)] = &found[..] else { panic!("{found:?}") };
        assert!(!h.complete);
        assert!(ins.lookahead.capacity() == 0);
    }
}
