//! What the fuzz targets share: cutting one fuzz input into the pieces a decoder is fed, so every target
//! tries split points as well as bytes, and checking that a split changes nothing.

use replscope::wire::Direction;

/// One piece of a link's traffic: a direction and its bytes.
pub struct Piece<'a> {
    /// Which way the bytes go.
    pub direction: Direction,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// Cuts `data` into pieces: each starts with a control byte (bit 7: master→replica, bits 0–6: length
/// − 1, so 1–128 bytes), then that many bytes (fewer at the end). Seeds are written the same way
/// ([`encode`]).
pub fn pieces(mut data: &[u8]) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    while let Some((&control, rest)) = data.split_first() {
        let direction = if control & 0x80 != 0 { Direction::MasterToReplica } else { Direction::ReplicaToMaster };
        let len = usize::from(control & 0x7f) + 1;
        let (bytes, rest) = rest.split_at(len.min(rest.len()));
        out.push(Piece { direction, bytes });
        data = rest;
    }
    out
}

/// Writes traffic as [`pieces`] reads it, in pieces of at most 128 bytes.
pub fn encode(direction: Direction, bytes: &[u8], out: &mut Vec<u8>) {
    let flag = if direction == Direction::MasterToReplica { 0x80 } else { 0 };
    for chunk in bytes.chunks(128) {
        out.push(flag | (chunk.len() as u8 - 1));
        out.extend_from_slice(chunk);
    }
}

/// Splits `data` in two at a point its first byte picks: (the point, the bytes to feed).
pub fn split_point(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&at, rest)) if !rest.is_empty() => (usize::from(at) % rest.len(), rest),
        Some((_, rest)) => (0, rest),
        None => (0, data),
    }
}
