//! Master→replica: handshake replies, the PSYNC answer, `\n` keepalives, the payload preamble, the RDB
//! payload, then the command stream.
//!
//! Lines are framed by hand: `$EOF:`, `$ENDOFF:` and `$<len>` are not RESP, and a lone `\n` is no
//! frame. Ordinary `+`/`-` replies are read, complete, by [`reply_line`]. The payload is delegated to
//! [`PayloadDecoder`] and the stream to [`StreamFramer`]; neither ever sees the other's bytes.

use crate::wire::event::{
    DesyncReason, ErrorCode, Event, EventSink, MasterReply, PayloadFraming, ReplId, WirePhase, lossy_capped,
};
use crate::wire::line::{BoundedBuf, LineFeed, trim_eol};
use crate::wire::payload::{EOF_MARK_LEN, PayloadDecoder, PayloadStep};
use crate::wire::rdb::Finding;
use crate::wire::resp::{ReplyLine, reply_line};
use crate::wire::stream::{StreamFramer, StreamSink, StreamTally};

/// Longest handshake line read (replicas themselves read at most 256 bytes per line).
pub const MAX_LINE_LEN: usize = 1024;

/// Facts the replica side tells this decoder.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplicaContext {
    /// The offset of the last `PSYNC` (the first byte the replica needs).
    pub psync_offset: Option<i64>,
    /// The connection is a plain client.
    pub plain_client: bool,
}

#[derive(Debug)]
enum State {
    /// Handshake and PSYNC answer lines; `awaiting_payload` once a full sync was announced.
    Lines {
        awaiting_payload: bool,
    },
    Payload(Box<PayloadDecoder>),
    Stream(StreamFramer),
    Passthrough,
    Opaque,
}

/// Decodes the master→replica direction of one connection.
#[derive(Debug)]
pub struct ReplyDecoder {
    state: State,
    line: BoundedBuf,
    /// Direction bytes fully accounted for (consumed by a finished frame, payload or stream).
    position: u64,
    /// The offset the RDB corresponds to (`+FULLRESYNC` or `$ENDOFF`): where the stream starts.
    sync_offset: Option<i64>,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyDecoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        ReplyDecoder {
            state: State::Lines { awaiting_payload: false },
            line: BoundedBuf::new(MAX_LINE_LEN),
            position: 0,
            sync_offset: None,
        }
    }

    /// The payload being received: its framing and the bytes so far.
    pub fn payload_progress(&self) -> Option<(PayloadFraming, u64)> {
        match &self.state {
            State::Payload(p) => Some((p.framing(), p.received())),
            _ => None,
        }
    }

    /// Stream bytes counted so far and bytes of a trailing incomplete command, once streaming.
    pub fn stream_progress(&self) -> Option<(u64, u64)> {
        match &self.state {
            State::Stream(f) => Some((f.stream_bytes(), f.partial_bytes())),
            _ => None,
        }
    }

    /// The incomplete stream command at the end of what was fed: the least it will measure and the bytes
    /// of it so far ((0, 0) between commands or before the stream).
    pub fn stream_pending(&self) -> (u64, u64) {
        match &self.state {
            State::Stream(f) => (f.pending_len(), f.partial_bytes()),
            _ => (0, 0),
        }
    }

    /// Whether the decoder gave up on this direction.
    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Decodes `input`, pushing what it says onto `out`.
    pub fn feed(&mut self, input: &[u8], ctx: ReplicaContext, out: &mut impl EventSink) {
        if ctx.plain_client && !matches!(self.state, State::Opaque) {
            self.state = State::Passthrough;
            self.line.clear();
        }
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            match &mut self.state {
                State::Passthrough | State::Opaque => return,
                State::Lines { awaiting_payload } => {
                    let awaiting = *awaiting_payload;
                    if self.line.is_empty() && rest[0] == b'\n' {
                        out.push(Event::Newline);
                        i += 1;
                        self.position += 1;
                        continue;
                    }
                    match self.line.feed_line(rest) {
                        LineFeed::Partial => return,
                        LineFeed::TooLong => {
                            let phase = if awaiting { WirePhase::AwaitingPayload } else { WirePhase::Handshake };
                            let reason = DesyncReason::TooLong { what: "master line", limit: MAX_LINE_LEN };
                            self.desync(out, phase, reason);
                            return;
                        }
                        LineFeed::Complete { consumed } => {
                            i += consumed;
                            let len = self.line.len() as u64;
                            self.on_line(awaiting, ctx, out);
                            self.line.clear();
                            if !matches!(self.state, State::Opaque) {
                                self.position += len;
                            }
                        }
                    }
                }
                State::Payload(payload) => {
                    let step = payload.feed(rest);
                    i += step.consumed;
                    self.position += step.consumed as u64;
                    if report_payload_step(step, out) {
                        self.state = State::Stream(StreamFramer::new(self.sync_offset));
                    }
                }
                State::Stream(framer) => {
                    let position = self.position;
                    let mut sink = Tallied { tally: StreamTally::default(), out: &mut *out };
                    let result = framer.feed(rest, &mut sink);
                    if sink.tally.commands > 0 {
                        let mut tally = sink.tally;
                        tally.offset = framer.offset();
                        out.push(Event::Stream(tally));
                    }
                    match result {
                        Ok(()) => {
                            self.position += rest.len() as u64;
                            i = input.len();
                        }
                        Err((at, reason)) => {
                            // Report where the command that could not be framed began.
                            let start = (position + at as u64).saturating_sub(framer.partial_bytes());
                            self.position = start;
                            self.desync(out, WirePhase::Stream, reason);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn desync(&mut self, out: &mut impl EventSink, phase: WirePhase, reason: DesyncReason) {
        out.push(Event::Desync { offset: self.position, phase, reason });
        self.state = State::Opaque;
        self.line.clear();
    }

    /// Interprets one complete line.
    fn on_line(&mut self, awaiting_payload: bool, ctx: ReplicaContext, out: &mut impl EventSink) {
        let raw = self.line.bytes();
        let line = trim_eol(raw);
        let phase = if awaiting_payload { WirePhase::AwaitingPayload } else { WirePhase::Handshake };
        let malformed = |what| DesyncReason::Malformed { what };

        if let Some(rest) = line.strip_prefix(b"$EOF:") {
            let Ok(mark) = <[u8; EOF_MARK_LEN]>::try_from(rest) else {
                return self.desync(out, phase, malformed("$EOF:<mark>"));
            };
            out.push(Event::PayloadStart { framing: PayloadFraming::EofMark });
            self.state = State::Payload(Box::new(PayloadDecoder::eof_marked(mark)));
            return;
        }
        if let Some(rest) = line.strip_prefix(b"$ENDOFF:") {
            let Some(reply) = parse_endoff(rest) else {
                return self.desync(out, phase, malformed("$ENDOFF"));
            };
            if let MasterReply::EndOffset { offset, .. } = reply {
                self.sync_offset = Some(offset);
            }
            out.push(Event::Reply { reply });
            self.state = State::Lines { awaiting_payload: true };
            return;
        }
        if let Some(rest) = line.strip_prefix(b"$") {
            let Some(len) = parse_len(rest) else {
                return self.desync(out, phase, DesyncReason::BadLength { what: "payload" });
            };
            out.push(Event::PayloadStart { framing: PayloadFraming::Sized { len } });
            let mut payload = PayloadDecoder::sized(len);
            if len == 0 {
                report_payload_step(payload.feed(&[]), out);
                self.state = State::Stream(StreamFramer::new(self.sync_offset));
            } else {
                self.state = State::Payload(Box::new(payload));
            }
            return;
        }
        if let Some(rest) = line.strip_prefix(b"+FULLRESYNC ") {
            let Some((replid, offset)) = parse_fullresync(rest) else {
                return self.desync(out, phase, malformed("+FULLRESYNC"));
            };
            self.sync_offset = Some(offset);
            out.push(Event::Reply { reply: MasterReply::FullResync { replid, offset } });
            self.state = State::Lines { awaiting_payload: true };
            return;
        }
        if line == b"+CONTINUE" || line.starts_with(b"+CONTINUE ") {
            let replid = match line.get(10..) {
                None | Some(b"") => None,
                Some(id) => match ReplId::parse(id) {
                    Some(id) => Some(id),
                    None => return self.desync(out, phase, malformed("+CONTINUE")),
                },
            };
            out.push(Event::Reply { reply: MasterReply::Continue { replid } });
            self.state = State::Stream(StreamFramer::new(ctx.psync_offset.map(|o| o.saturating_sub(1))));
            return;
        }
        if line == b"+DUALCHANNELSYNC" {
            out.push(Event::Reply { reply: MasterReply::DualChannelSync });
            self.state = State::Lines { awaiting_payload: true };
            return;
        }
        if let Some(rest) = line.strip_prefix(b"+RDBCHANNELSYNC ") {
            let Some(client_id) = std::str::from_utf8(rest).ok().and_then(|s| s.trim().parse().ok()) else {
                return self.desync(out, phase, malformed("+RDBCHANNELSYNC"));
            };
            out.push(Event::Reply { reply: MasterReply::RdbChannelSync { client_id } });
            // The stream follows at once, with no header; its start offset comes from the RDB channel.
            self.state = State::Stream(StreamFramer::new(None));
            return;
        }
        match reply_line(raw) {
            Ok(ReplyLine::Simple(text)) => {
                let reply = match text {
                    b"PONG" => MasterReply::Pong,
                    b"OK" => MasterReply::Ok,
                    other => MasterReply::Other(lossy_capped(other, 128)),
                };
                out.push(Event::Reply { reply });
            }
            Ok(ReplyLine::Error(text)) => {
                let (word, message) = match memchr::memchr(b' ', text) {
                    Some(p) => (&text[..p], &text[p + 1..]),
                    None => (text, &b""[..]),
                };
                let reply =
                    MasterReply::Error { code: ErrorCode::from_word(word), message: lossy_capped(message, 128) };
                out.push(Event::Reply { reply });
                // An error where a payload was expected ends the sync attempt; what follows is lines again.
                self.state = State::Lines { awaiting_payload: false };
            }
            Err(e) => self.desync(out, phase, DesyncReason::InvalidResp(e)),
        }
    }
}

/// Pushes what a payload step found; returns whether the payload ended.
fn report_payload_step(step: PayloadStep, out: &mut impl EventSink) -> bool {
    match step.finding {
        Some(Finding::Header(header)) => out.push(Event::RdbHeader { header }),
        Some(Finding::NotRdb(prefix)) => out.push(Event::NotRdb { prefix: hex(&prefix) }),
        None => {}
    }
    match step.end {
        Some((bytes, trailer)) => {
            out.push(Event::PayloadEnd { bytes, trailer });
            true
        }
        None => false,
    }
}

/// Caps the payload length: past 2^48 bytes (256 TiB) a length is not an RDB.
const MAX_PAYLOAD_LEN: u64 = 1 << 48;

fn parse_len(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= MAX_PAYLOAD_LEN).then_some(n)
}

fn parse_fullresync(rest: &[u8]) -> Option<(ReplId, i64)> {
    let mut parts = rest.split(|b| *b == b' ');
    let replid = ReplId::parse(parts.next()?)?;
    let offset = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    parts.next().is_none().then_some((replid, offset))
}

fn parse_endoff(rest: &[u8]) -> Option<MasterReply> {
    let text = std::str::from_utf8(rest).ok()?;
    let mut parts = text.split(' ');
    let offset = parts.next()?.parse().ok()?;
    let replid = ReplId::parse(parts.next()?.as_bytes())?;
    let dbid = parts.next()?.parse().ok()?;
    let client_id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(MasterReply::EndOffset { offset, replid, dbid, client_id })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tallies the commands of one read; a newline between them is an event of its own, as before a sync.
struct Tallied<'a, S> {
    tally: StreamTally,
    out: &'a mut S,
}

impl<S: EventSink> StreamSink for Tallied<'_, S> {
    #[inline]
    fn command(&mut self, name: crate::wire::CommandName, len: u64, stream_bytes: u64) {
        self.tally.command(name, len, stream_bytes);
    }

    fn newline(&mut self) {
        self.out.push(Event::Newline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rdb::TrailerCheck;

    const ID: &str = "1c5c2a09a52381d9d3c4a796a9287f9f8cfa4f4c";

    fn decode(bytes: &[u8], chunk: usize, ctx: ReplicaContext) -> Vec<Event> {
        let mut d = ReplyDecoder::new();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            d.feed(c, ctx, &mut out);
        }
        out
    }

    #[test]
    fn endoff_with_negative_dbid() {
        let line = format!("\n\n$ENDOFF:0 {ID} -1 5\r\n");
        let got = decode(line.as_bytes(), 3, ReplicaContext::default());
        assert_eq!(got.len(), 3);
        assert!(matches!(
            got[2],
            Event::Reply { reply: MasterReply::EndOffset { offset: 0, dbid: -1, client_id: 5, .. } }
        ));
    }

    #[test]
    fn zero_length_payload_ends_at_once_and_the_stream_follows() {
        let wire = format!("+FULLRESYNC {ID} 7\r\n$0\r\n*1\r\n$4\r\nping\r\n");
        let got = decode(wire.as_bytes(), 1, ReplicaContext::default());
        assert_eq!(got[2], Event::NotRdb { prefix: String::new() });
        assert_eq!(got[3], Event::PayloadEnd { bytes: 0, trailer: TrailerCheck::NotRdb });
        assert!(matches!(&got[4], Event::Stream(t) if t.offset == Some(21) && t.commands == 1), "{got:?}");
    }

    #[test]
    fn continue_counts_from_the_psync_offset() {
        let wire = format!("+CONTINUE {ID}\r\n*1\r\n$4\r\nping\r\n");
        let ctx = ReplicaContext { psync_offset: Some(72), plain_client: false };
        let got = decode(wire.as_bytes(), 5, ctx);
        assert!(matches!(&got[1..], [Event::Stream(t), ..] if t.offset == Some(85)), "{got:?}");
    }

    #[test]
    fn stream_desync_reports_where_the_bad_command_began() {
        let wire = "+CONTINUE\r\n*1\r\n$4\r\nping\r\n*1\r\n$4\r\npingXX";
        let got = decode(wire.as_bytes(), 4, ReplicaContext::default());
        assert!(matches!(got.last(), Some(Event::Desync { offset: 25, phase: WirePhase::Stream, .. })), "{got:?}");
    }
}
