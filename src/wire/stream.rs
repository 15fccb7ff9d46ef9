//! The replication command stream: frames each RESP command (`*N\r\n` then N × `$len\r\n` + bytes +
//! `\r\n`), names it over a fixed set, and keeps the replication offset exactly as the server does
//! (PROTOCOL.md §6.2: every complete command counts, nothing else does).
//!
//! This framer is incremental and byte-exact: a command may be split anywhere, and bulk bodies are skipped
//! in place, never copied, so a 512 MB value costs no memory. (`redis-protocol` needs a whole frame in
//! one buffer, which would make memory grow with value size; it decodes the bounded handshake frames.)

use crate::wire::event::DesyncReason;
use crate::wire::names::{CommandName, MAX_NAME_LEN};

/// Digits allowed in a multibulk count (Redis caps it at 1024*1024 for clients, INT_MAX for masters).
const MAX_COUNT_DIGITS: u8 = 10;
/// Digits allowed in a bulk length (up to 10^12 − 1 bytes, far past any `proto-max-bulk-len`).
const MAX_BULK_DIGITS: u8 = 12;

/// One thing the stream said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// A complete command.
    Command {
        /// Its name.
        name: CommandName,
        /// Its length in bytes.
        len: u64,
        /// Stream bytes counted so far, this command included.
        stream_bytes: u64,
        /// The replication offset after it, if the start offset is known.
        offset: Option<i64>,
    },
    /// A lone `\n` between commands (not counted).
    Newline,
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

    /// Frames `input`. On a byte no command can contain, returns how many bytes were consumed before it
    /// and why; the caller stops decoding this direction.
    pub fn feed(&mut self, input: &[u8], mut emit: impl FnMut(StreamItem)) -> Result<(), (usize, DesyncReason)> {
        let n = input.len();
        let mut i = 0;
        while i < n {
            match self.state {
                State::Start => {
                    match input[i] {
                        b'*' => {
                            self.state = State::Count;
                            self.number = 0;
                            self.digits = 0;
                            self.cmd_len = 1;
                        }
                        b'\n' => emit(StreamItem::Newline),
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
                                emit(StreamItem::Command {
                                    name,
                                    len: self.cmd_len,
                                    stream_bytes: self.stream_bytes,
                                    offset: self.base.map(|b| b.saturating_add(self.stream_bytes as i64)),
                                });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8], chunk: usize, base: Option<i64>) -> (Vec<StreamItem>, Result<(), DesyncReason>) {
        let mut f = StreamFramer::new(base);
        let mut items = Vec::new();
        for c in bytes.chunks(chunk) {
            if let Err((_, reason)) = f.feed(c, |it| items.push(it)) {
                return (items, Err(reason));
            }
        }
        (items, Ok(()))
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
            f.feed(b"*1\r\n$4\r\nping\r\nHELLO", |_| {}),
            Err((14, DesyncReason::UnexpectedByte { byte: b'H', expected: "'*' starting a command" }))
        );
        let mut f = StreamFramer::new(Some(0));
        assert!(matches!(
            f.feed(b"*1\r\n$99999999999999\r\n", |_| {}),
            Err((_, DesyncReason::BadLength { what: "bulk" }))
        ));
        let mut f = StreamFramer::new(Some(0));
        assert!(matches!(f.feed(b"*1\r\n$4\r\npingXX", |_| {}), Err((12, _))));
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
}
