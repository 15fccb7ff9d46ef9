//! The replication command stream: frames each RESP command (`*N\r\n` then N × `$len\r\n` + bytes +
//! `\r\n`), names it over a fixed set, and keeps the replication offset exactly as the server does
//! (PROTOCOL.md §6.2: every complete command counts, nothing else does).
//!
//! This framer is incremental and byte-exact: a command may be split anywhere, and bulk bodies are skipped
//! in place, never copied, so a 512 MB value costs no memory. (A whole-frame decoder would make memory
//! grow with value size; [`crate::wire::resp`] reads the bounded handshake frames.)

use crate::wire::event::DesyncReason;
use crate::wire::names::{CommandName, MAX_NAME_LEN};

/// Digits allowed in a multibulk count (Redis caps it at 1024*1024 for clients, INT_MAX for masters).
const MAX_COUNT_DIGITS: u8 = 10;
/// Digits allowed in a bulk length (up to 10^12 − 1 bytes, far past any `proto-max-bulk-len`).
const MAX_BULK_DIGITS: u8 = 12;

/// Where the framer reports what it framed.
pub trait StreamSink {
    /// A complete command of `len` bytes; `stream_bytes` counts the stream so far, this command included.
    fn command(&mut self, name: CommandName, len: u64, stream_bytes: u64);
    /// A lone `\n` between commands (not counted).
    fn newline(&mut self);
}

/// What the complete commands of one read amounted to: the counts by name, the largest, the last, and
/// where the stream stood after them. Nothing per command is kept, so a read of a million small commands
/// costs one of these.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamTally {
    /// Commands by [`CommandName::index`]. (A read is at most `--buffer` ≤ 1 GiB and a named command at
    /// least 11 bytes, so a `u32` cannot overflow.)
    pub counts: [u32; CommandName::ALL.len()],
    /// Complete commands.
    pub commands: u64,
    /// The largest command: its name and length (the first of equals).
    pub largest: Option<(CommandName, u64)>,
    /// The name of the last command.
    pub last: Option<CommandName>,
    /// Stream bytes counted after the last complete command (the whole stream, not this read).
    pub stream_bytes: u64,
    /// The replication offset after it, when the start offset is known on this connection.
    pub offset: Option<i64>,
}

impl Default for StreamTally {
    fn default() -> Self {
        StreamTally {
            counts: [0; CommandName::ALL.len()],
            commands: 0,
            largest: None,
            last: None,
            stream_bytes: 0,
            offset: None,
        }
    }
}

impl StreamTally {
    /// The commands counted, by name, in [`CommandName::ALL`] order, without the zeros.
    pub fn by_name(&self) -> impl Iterator<Item = (CommandName, u32)> + '_ {
        CommandName::ALL.iter().zip(self.counts).filter(|(_, n)| *n > 0).map(|(name, n)| (*name, n))
    }
}

impl StreamSink for StreamTally {
    #[inline]
    fn command(&mut self, name: CommandName, len: u64, stream_bytes: u64) {
        if let Some(n) = self.counts.get_mut(name.index()) {
            *n = n.saturating_add(1);
        }
        self.commands += 1;
        if self.largest.is_none_or(|(_, l)| l < len) {
            self.largest = Some((name, len));
        }
        self.last = Some(name);
        self.stream_bytes = stream_bytes;
    }

    fn newline(&mut self) {}
}

impl std::fmt::Debug for StreamTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTally")
            .field("commands", &self.commands)
            .field("by_name", &self.by_name().collect::<Vec<_>>())
            .field("largest", &self.largest)
            .field("last", &self.last)
            .field("stream_bytes", &self.stream_bytes)
            .field("offset", &self.offset)
            .finish()
    }
}

impl serde::Serialize for StreamTally {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let by_name: std::collections::BTreeMap<&str, u32> = self.by_name().map(|(n, c)| (n.as_str(), c)).collect();
        let mut st = s.serialize_struct("StreamTally", 6)?;
        st.serialize_field("commands", &self.commands)?;
        st.serialize_field("by_name", &by_name)?;
        st.serialize_field("largest", &self.largest.map(|(n, l)| (n.as_str(), l)))?;
        st.serialize_field("last", &self.last.map(CommandName::as_str))?;
        st.serialize_field("stream_bytes", &self.stream_bytes)?;
        st.serialize_field("offset", &self.offset)?;
        st.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    Count,
    CountLf,
    Dollar,
    BulkLen,
    BulkLenLf,
    Body { remaining: u64 },
    BodyCr,
    BodyLf,
}

/// Frames the command stream of one connection.
#[derive(Debug)]
pub struct StreamFramer {
    state: State,
    base: Option<i64>,
    stream_bytes: u64,
    /// Bytes of the command being read.
    cmd_len: u64,
    args_left: u64,
    arg_index: u64,
    number: u64,
    digits: u8,
    name: [u8; MAX_NAME_LEN],
    name_len: usize,
    name_too_long: bool,
}

impl StreamFramer {
    /// A framer whose offsets start at `base` (`None`: the start offset is learnt elsewhere).
    pub fn new(base: Option<i64>) -> Self {
        StreamFramer {
            state: State::Start,
            base,
            stream_bytes: 0,
            cmd_len: 0,
            args_left: 0,
            arg_index: 0,
            number: 0,
            digits: 0,
            name: [0; MAX_NAME_LEN],
            name_len: 0,
            name_too_long: false,
        }
    }

    /// Stream bytes counted so far (complete commands only).
    pub fn stream_bytes(&self) -> u64 {
        self.stream_bytes
    }

    /// Bytes of an incomplete command at the end of what was fed.
    pub fn partial_bytes(&self) -> u64 {
        self.cmd_len
    }

    /// The least the incomplete command at the end of what was fed will measure, from the bulk lengths
    /// read so far (0 between commands): what a close in its middle cut.
    pub fn pending_len(&self) -> u64 {
        match self.state {
            State::Start => 0,
            State::Body { remaining } => self.cmd_len.saturating_add(remaining).saturating_add(2),
            State::BodyCr => self.cmd_len + 2,
            State::BodyLf => self.cmd_len + 1,
            _ => self.cmd_len,
        }
    }

    /// The replication offset after the complete commands, if the start offset is known.
    pub fn offset(&self) -> Option<i64> {
        self.base.map(|b| b.saturating_add(i64::try_from(self.stream_bytes).unwrap_or(i64::MAX)))
    }

    /// Frames `input`, telling `sink` of every complete command. On a byte no command can contain,
    /// returns how many bytes were consumed before it and why; the caller stops decoding this direction.
    ///
    /// Whole commands are framed in one step from the slice ([`whole_command`]); only a command split
    /// across reads (or one that is not well formed) goes through the byte-by-byte states, which say
    /// exactly where a bad byte is.
    pub fn feed(&mut self, input: &[u8], sink: &mut impl StreamSink) -> Result<(), (usize, DesyncReason)> {
        let n = input.len();
        let mut i = 0;
        while i < n {
            if self.state == State::Start
                && input[i] == b'*'
                && let Some((len, name)) = whole_command(&input[i..])
            {
                self.stream_bytes += len as u64;
                sink.command(name, len as u64, self.stream_bytes);
                i += len;
                continue;
            }
            match self.state {
                State::Start => {
                    match input[i] {
                        b'*' => {
                            self.state = State::Count;
                            self.number = 0;
                            self.digits = 0;
                            self.cmd_len = 1;
                        }
                        b'\n' => sink.newline(),
                        byte => {
                            return Err((i, DesyncReason::UnexpectedByte { byte, expected: "'*' starting a command" }));
                        }
                    }
                    i += 1;
                }
                State::Count | State::BulkLen => {
                    let (max, what) = if self.state == State::Count {
                        (MAX_COUNT_DIGITS, "multibulk")
                    } else {
                        (MAX_BULK_DIGITS, "bulk")
                    };
                    while i < n && input[i].is_ascii_digit() {
                        if self.digits == max {
                            return Err((i, DesyncReason::BadLength { what }));
                        }
                        self.number = self.number * 10 + u64::from(input[i] - b'0');
                        self.digits += 1;
                        i += 1;
                        self.cmd_len += 1;
                    }
                    if i == n {
                        break;
                    }
                    if input[i] != b'\r' || self.digits == 0 {
                        return Err((i, DesyncReason::BadLength { what }));
                    }
                    self.state = if self.state == State::Count { State::CountLf } else { State::BulkLenLf };
                    i += 1;
                    self.cmd_len += 1;
                }
                State::CountLf | State::BulkLenLf | State::BodyLf => {
                    if input[i] != b'\n' {
                        return Err((i, DesyncReason::UnexpectedByte { byte: input[i], expected: "'\\n'" }));
                    }
                    i += 1;
                    self.cmd_len += 1;
                    match self.state {
                        State::CountLf => {
                            self.args_left = self.number;
                            self.arg_index = 0;
                            self.name_len = 0;
                            self.name_too_long = false;
                            if self.args_left == 0 {
                                // `*0\r\n` is consumed by the server without running anything; its bytes
                                // still advance the offset.
                                self.stream_bytes += self.cmd_len;
                                self.cmd_len = 0;
                                self.state = State::Start;
                            } else {
                                self.state = State::Dollar;
                            }
                        }
                        State::BulkLenLf => {
                            self.state = State::Body { remaining: self.number };
                        }
                        _ => {
                            self.args_left -= 1;
                            self.arg_index += 1;
                            if self.args_left == 0 {
                                self.stream_bytes += self.cmd_len;
                                let name = if self.name_too_long {
                                    CommandName::Other
                                } else {
                                    CommandName::classify(&self.name[..self.name_len])
                                };
                                sink.command(name, self.cmd_len, self.stream_bytes);
                                self.cmd_len = 0;
                                self.state = State::Start;
                            } else {
                                self.state = State::Dollar;
                            }
                        }
                    }
                }
                State::Dollar => {
                    if input[i] != b'$' {
                        return Err((
                            i,
                            DesyncReason::UnexpectedByte { byte: input[i], expected: "'$' starting a bulk" },
                        ));
                    }
                    self.state = State::BulkLen;
                    self.number = 0;
                    self.digits = 0;
                    i += 1;
                    self.cmd_len += 1;
                }
                State::Body { remaining } => {
                    let take = remaining.min((n - i) as u64) as usize;
                    if self.arg_index == 0 && !self.name_too_long {
                        let room = MAX_NAME_LEN - self.name_len;
                        if take > room {
                            self.name_too_long = true;
                        } else {
                            self.name[self.name_len..self.name_len + take].copy_from_slice(&input[i..i + take]);
                            self.name_len += take;
                        }
                    }
                    i += take;
                    self.cmd_len += take as u64;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 { State::BodyCr } else { State::Body { remaining } };
                }
                State::BodyCr => {
                    if input[i] != b'\r' {
                        return Err((
                            i,
                            DesyncReason::UnexpectedByte { byte: input[i], expected: "'\\r' after a bulk" },
                        ));
                    }
                    i += 1;
                    self.cmd_len += 1;
                    self.state = State::BodyLf;
                }
            }
        }
        Ok(())
    }
}

/// Frames one whole, well-formed command at the start of `buf` (which starts with `*`): its length and
/// name. `None` when it does not end within `buf`, is `*0`, or is not well formed: the byte-by-byte
/// states then take it, to wait for the rest or to say what is wrong. Bulk bodies are skipped by their
/// length, unread, except the first (the name).
#[inline]
fn whole_command(buf: &[u8]) -> Option<(usize, CommandName)> {
    let (count, mut i) = header_number(buf, 1, MAX_COUNT_DIGITS)?;
    if count == 0 {
        return None;
    }
    let mut name = CommandName::Other;
    for arg in 0..count {
        if *buf.get(i)? != b'$' {
            return None;
        }
        let (len, body) = header_number(buf, i + 1, MAX_BULK_DIGITS)?;
        let end = body.checked_add(usize::try_from(len).ok()?)?;
        if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        if arg == 0 {
            name = CommandName::classify(&buf[body..end]);
        }
        i = end + 2;
    }
    Some((i, name))
}

/// Reads the decimal number at `buf[i..]` and its `\r\n`: the number and where the next thing starts.
/// `None` unless 1 to `max_digits` digits then `\r\n` are all there.
#[inline]
fn header_number(buf: &[u8], start: usize, max_digits: u8) -> Option<(u64, usize)> {
    let mut value = 0u64;
    let mut i = start;
    loop {
        let byte = *buf.get(i)?;
        match byte {
            b'0'..=b'9' => {
                if i - start == usize::from(max_digits) {
                    return None;
                }
                value = value * 10 + u64::from(byte - b'0');
                i += 1;
            }
            b'\r' if i > start && *buf.get(i + 1)? == b'\n' => return Some((value, i + 2)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every command, as the sink heard it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum StreamItem {
        Command { name: CommandName, len: u64, stream_bytes: u64, offset: Option<i64> },
        Newline,
    }

    struct Recorder {
        base: Option<i64>,
        items: Vec<StreamItem>,
    }

    impl StreamSink for Recorder {
        fn command(&mut self, name: CommandName, len: u64, stream_bytes: u64) {
            let offset = self.base.map(|b| b + stream_bytes as i64);
            self.items.push(StreamItem::Command { name, len, stream_bytes, offset });
        }
        fn newline(&mut self) {
            self.items.push(StreamItem::Newline);
        }
    }

    fn frame_pieces(
        bytes: &[u8],
        pieces: impl IntoIterator<Item = usize>,
        base: Option<i64>,
    ) -> (Vec<StreamItem>, Result<(), (usize, DesyncReason)>) {
        let mut f = StreamFramer::new(base);
        let mut r = Recorder { base, items: Vec::new() };
        let mut at = 0;
        for len in pieces {
            let piece = &bytes[at..(at + len).min(bytes.len())];
            if let Err((pos, reason)) = f.feed(piece, &mut r) {
                return (r.items, Err((at + pos, reason)));
            }
            at += piece.len();
        }
        (r.items, Ok(()))
    }

    fn frame(bytes: &[u8], chunk: usize, base: Option<i64>) -> (Vec<StreamItem>, Result<(), DesyncReason>) {
        let pieces = bytes.chunks(chunk).map(<[u8]>::len).collect::<Vec<_>>();
        let (items, res) = frame_pieces(bytes, pieces, base);
        (items, res.map_err(|(_, reason)| reason))
    }

    #[test]
    fn offsets_follow_the_capture_arithmetic() {
        // PROTOCOL.md §6.2: FULLRESYNC 0 → SELECT(23) + set a 1 (27) + incr a (21) → 71.
        let s = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$4\r\nincr\r\n$1\r\na\r\n";
        for chunk in 1..=s.len() {
            let (items, res) = frame(s, chunk, Some(0));
            assert_eq!(res, Ok(()));
            let got: Vec<_> = items
                .iter()
                .map(|i| match i {
                    StreamItem::Command { name, len, offset, .. } => (*name, *len, *offset),
                    StreamItem::Newline => panic!("no newline here"),
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (CommandName::Select, 23, Some(23)),
                    (CommandName::Set, 27, Some(50)),
                    (CommandName::Incr, 21, Some(71))
                ]
            );
        }
    }

    #[test]
    fn big_bodies_are_skipped_and_long_names_are_other() {
        let mut s = b"*2\r\n$12\r\nVERYLONGNAME\r\n$100000\r\n".to_vec();
        s.extend(std::iter::repeat_n(b'v', 100_000));
        s.extend_from_slice(b"\r\n");
        let (items, res) = frame(&s, 4096, None);
        assert_eq!(res, Ok(()));
        assert!(
            matches!(items[..], [StreamItem::Command { name: CommandName::Other, len, offset: None, .. }] if len == s.len() as u64)
        );
    }

    #[test]
    fn garbage_is_reported_with_its_position() {
        let mut f = StreamFramer::new(Some(0));
        assert_eq!(
            f.feed(b"*1\r\n$4\r\nping\r\nHELLO", &mut StreamTally::default()),
            Err((14, DesyncReason::UnexpectedByte { byte: b'H', expected: "'*' starting a command" }))
        );
        let mut f = StreamFramer::new(Some(0));
        assert!(matches!(
            f.feed(b"*1\r\n$99999999999999\r\n", &mut StreamTally::default()),
            Err((_, DesyncReason::BadLength { what: "bulk" }))
        ));
        let mut f = StreamFramer::new(Some(0));
        assert!(matches!(f.feed(b"*1\r\n$4\r\npingXX", &mut StreamTally::default()), Err((12, _))));
    }

    #[test]
    fn empty_multibulk_counts_bytes_but_is_no_command() {
        let (items, _) = frame(b"*0\r\n*1\r\n$4\r\nping\r\n\n", 3, Some(10));
        assert_eq!(
            items,
            vec![
                StreamItem::Command { name: CommandName::Ping, len: 14, stream_bytes: 18, offset: Some(28) },
                StreamItem::Newline
            ]
        );
    }

    /// One command as the master writes it, from a few arguments.
    fn resp(args: &[Vec<u8>]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just(b"SET".to_vec()),
            Just(b"ping".to_vec()),
            Just(b"REPLCONF".to_vec()),
            Just(b"incrbyfloat".to_vec()),
            Just(b"VERYLONGCOMMANDNAME".to_vec()),
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        let command = (name, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4))
            .prop_map(|(name, rest)| resp(&[vec![name], rest].concat()));
        let piece = prop_oneof![8 => command, 1 => Just(b"*0\r\n".to_vec()), 1 => Just(b"\n".to_vec())];
        proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        /// The one-step path for whole commands and the byte-by-byte states agree on every command,
        /// whatever the split, and on where a bad byte is.
        #[test]
        fn whole_commands_and_split_ones_frame_the_same(
            stream in stream_strategy(),
            garbage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            cuts in proptest::collection::vec(1usize..64, 0..40),
        ) {
            let mut bytes = stream;
            if let Some((at, byte)) = garbage && !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let whole = frame_pieces(&bytes, [bytes.len()], Some(5));
            let bytewise = frame_pieces(&bytes, std::iter::repeat_n(1, bytes.len()), Some(5));
            let mut pieces = cuts.clone();
            pieces.push(bytes.len());
            let split = frame_pieces(&bytes, pieces, Some(5));
            prop_assert_eq!(&whole, &bytewise);
            prop_assert_eq!(&whole, &split);
        }

        /// The tally of a read is the sum of its commands.
        #[test]
        fn the_tally_sums_the_commands(stream in stream_strategy()) {
            let (items, _) = frame_pieces(&stream, [stream.len()], None);
            let mut tally = StreamTally::default();
            let mut f = StreamFramer::new(None);
            let _ = f.feed(&stream, &mut tally);
            let commands: Vec<_> = items
                .iter()
                .filter_map(|i| match i {
                    StreamItem::Command { name, len, stream_bytes, .. } => Some((*name, *len, *stream_bytes)),
                    StreamItem::Newline => None,
                })
                .collect();
            prop_assert_eq!(tally.commands, commands.len() as u64);
            for name in CommandName::ALL {
                let n = commands.iter().filter(|c| c.0 == *name).count() as u32;
                prop_assert_eq!(tally.counts[name.index()], n);
            }
            let mut largest: Option<(CommandName, u64)> = None;
            for c in &commands {
                if largest.is_none_or(|(_, l)| l < c.1) {
                    largest = Some((c.0, c.1));
                }
            }
            prop_assert_eq!(tally.largest, largest);
            prop_assert_eq!(tally.last, commands.last().map(|c| c.0));
            if let Some(c) = commands.last() {
                prop_assert_eq!(tally.stream_bytes, c.2);
            }
        }
    }
}
