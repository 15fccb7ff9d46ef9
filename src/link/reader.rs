//! A connection's reader: its [`Decoder`] and a reused buffer for the events, kept beside its link (not
//! in it). Every user feeds a link the same two steps: [`Reader::read`] the forwarded bytes, then hand
//! what it made of them ([`Decoded`]) to [`Links::on_decoded`](super::Links::on_decoded). The proxy reads
//! outside its route's lock and takes the lock only for the second step.

use crate::time::Timestamp;
use crate::wire::{Decoder, Direction, PayloadFraming, WireEvent};

/// What a connection's reader made of one read: the input of [`Links::on_decoded`](super::Links::on_decoded).
#[derive(Clone, Copy, Debug)]
pub struct Decoded<'a> {
    /// The direction the bytes went.
    pub direction: Direction,
    /// How many bytes were forwarded.
    pub len: usize,
    /// The events they produced.
    pub events: &'a [WireEvent],
    /// The decoder's payload progress after them ([`Decoder::payload_progress`]).
    pub payload_progress: Option<(PayloadFraming, u64)>,
    /// A stream command the master is in the middle of sending: the least it will measure and the bytes
    /// of it so far ((0, 0) between commands).
    pub stream_pending: (u64, u64),
}

/// One connection's decoder (both directions) and its events buffer.
#[derive(Debug, Default)]
pub struct Reader {
    decoder: Decoder,
    events: Vec<WireEvent>,
}

impl Reader {
    /// A reader for a new connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes bytes forwarded in `direction` at `now`.
    pub fn read(&mut self, direction: Direction, bytes: &[u8], now: Timestamp) -> Decoded<'_> {
        self.events.clear();
        self.decoder.feed(direction, bytes, now, &mut self.events);
        Decoded {
            direction,
            len: bytes.len(),
            events: &self.events,
            payload_progress: self.decoder.payload_progress(),
            stream_pending: self.decoder.stream_pending(),
        }
    }

    /// The events of the last read.
    pub fn events(&self) -> &[WireEvent] {
        &self.events
    }
}
