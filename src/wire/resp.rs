//! Bounded RESP2 reading, by hand: the replica's commands (flat arrays of bulk strings), the master's
//! one-line replies, and the answers introspection gets (nested at most [`Limits::max_depth`] deep).
//!
//! Three rules keep a peer from turning these into a crash or a stall:
//! - no recursion: nesting is a counted stack, capped, and anything deeper is an error;
//! - no allocation from a length field: a count or a length is checked against the bytes actually there,
//!   never used to reserve memory;
//! - no rescans: the readers resume where the last call stopped, so a frame that arrives one byte per read
//!   costs O(its length) in all, not O(length²).
//!
//! Each reader is check-then-parse: it says a frame is complete (and how long) before anything is built.

use std::fmt;

/// Why bytes are not the RESP expected here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RespError {
    /// A frame type byte that is not `+ - : $ *`.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A count, length or integer that is not a number, out of range, or on a line too long to be one.
    #[error("bad length, count or integer")]
    BadNumber,
    /// A bulk string whose body is not followed by CRLF.
    #[error("bulk string without its CRLF")]
    MissingCrlf,
    /// A line ending in `\n` without the `\r`.
    #[error("line without CR")]
    BareLf,
    /// Arrays nested deeper than allowed.
    #[error("nested deeper than {0}")]
    TooDeep(usize),
    /// More elements than allowed in one frame.
    #[error("more than {0} elements")]
    TooManyElements(usize),
    /// A replica command that is not an array.
    #[error("command is not an array")]
    NotArray,
    /// A replica command with an element that is not a bulk string (a nested array among them).
    #[error("command element is not a bulk string")]
    NotBulk,
    /// A replica command with no elements (or a null array).
    #[error("empty command")]
    Empty,
}

/// The longest a `$<len>` / `*<count>` / `:<int>` line may be: a sign, 19 digits and CRLF.
const MAX_NUMBER_LINE: usize = 22;

/// Reads the number on a header line `<type><digits>\r\n` starting at `at`. `Ok(None)` when the line is
/// not complete yet; returns the number and where the line ends (after its `\n`).
fn number_line(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, RespError> {
    let window = &buf[at..buf.len().min(at + MAX_NUMBER_LINE)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        return if window.len() == MAX_NUMBER_LINE { Err(RespError::BadNumber) } else { Ok(None) };
    };
    if nl == 0 || window[nl - 1] != b'\r' {
        return Err(RespError::BareLf);
    }
    let digits = window.get(1..nl - 1).ok_or(RespError::BadNumber)?;
    let n = parse_i64(digits).ok_or(RespError::BadNumber)?;
    Ok(Some((n, at + nl + 1)))
}

/// A decimal integer, optionally signed, with no other characters.
pub fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, body) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if body.is_empty() || body.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in body {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

/// A resumable reader of one replica command: `*N\r\n` then N × `$len\r\n<bytes>\r\n`, nothing nested.
///
/// Fed the same growing buffer (bytes only appended) until it answers; [`FlatCommand::reset`] after the
/// buffer's front is consumed. The argument ranges it keeps are bounded by the bytes present.
#[derive(Debug, Default)]
pub struct FlatCommand {
    /// Bytes of the buffer accounted for: the count line and the whole arguments read so far.
    pos: usize,
    /// `N`, once its line is read.
    count: Option<usize>,
    /// Where each whole argument's body lies in the buffer.
    args: Vec<(usize, usize)>,
}

impl FlatCommand {
    /// Forgets the command in progress (the buffer's front was consumed).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.count = None;
        self.args.clear();
    }

    /// The arguments' ranges in the buffer, once [`FlatCommand::resume`] said the command is complete.
    pub fn args(&self) -> &[(usize, usize)] {
        &self.args
    }

    /// Goes on reading `buf` (which must start with the command). `Ok(Some(len))` once the command is
    /// complete, `len` bytes long.
    pub fn resume(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        let count = match self.count {
            Some(c) => c,
            None => {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {}
                    Some(_) => return Err(RespError::NotArray),
                }
                let Some((n, end)) = number_line(buf, 0)? else {
                    return Ok(None);
                };
                if n <= 0 {
                    return Err(if n < -1 { RespError::BadNumber } else { RespError::Empty });
                }
                let n = usize::try_from(n).map_err(|_| RespError::BadNumber)?;
                self.count = Some(n);
                self.pos = end;
                n
            }
        };
        while self.args.len() < count {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            if kind != b'$' {
                return Err(RespError::NotBulk);
            }
            let Some((len, body)) = number_line(buf, self.pos)? else {
                return Ok(None);
            };
            let len = usize::try_from(len).map_err(|_| RespError::NotBulk)?;
            let Some(end) = body.checked_add(len) else {
                return Err(RespError::BadNumber);
            };
            let Some(crlf) = buf.get(end..end.saturating_add(2)) else {
                return Ok(None);
            };
            if crlf != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            self.args.push((body, end));
            self.pos = end + 2;
        }
        Ok(Some(self.pos))
    }
}

/// What a server answered, decoded (introspection's answers).
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`.
    SimpleString(Vec<u8>),
    /// `-ERR text`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` and its bytes.
    BulkString(Vec<u8>),
    /// `*n` and its elements.
    Array(Vec<Value>),
    /// `$-1` or `*-1`.
    Null,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::SimpleString(s) => write!(f, "SimpleString({:?})", String::from_utf8_lossy(s)),
            Value::Error(e) => write!(f, "Error({e:?})"),
            Value::Integer(n) => write!(f, "Integer({n})"),
            Value::BulkString(b) => write!(f, "BulkString({} bytes)", b.len()),
            Value::Array(items) => write!(f, "Array({} items)", items.len()),
            Value::Null => f.write_str("Null"),
        }
    }
}

/// How much of a nested frame a [`FrameReader`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Arrays inside arrays: 1 allows an array of scalars, 0 only scalars.
    pub max_depth: usize,
    /// Elements in one frame, counting every header (a frame of a million one-byte strings would otherwise
    /// build a million values).
    pub max_elements: usize,
}

/// A resumable check-then-parse reader of one RESP2 frame at a time, nested at most [`Limits::max_depth`].
#[derive(Debug)]
pub struct FrameReader {
    limits: Limits,
    /// Bytes of the buffer accounted for in the frame being checked.
    pos: usize,
    /// For a `+`/`-` line not finished yet: how far the search for its `\n` got.
    searched: usize,
    /// Elements still due in each open array, innermost last.
    open: Vec<u64>,
    /// Headers read in this frame.
    elements: usize,
}

impl FrameReader {
    /// A reader with these limits.
    pub fn new(limits: Limits) -> Self {
        FrameReader { limits, pos: 0, searched: 0, open: Vec::new(), elements: 0 }
    }

    /// Checks `buf` (the same buffer, grown, since the last call; it starts with the frame) and, once a
    /// whole frame is there, decodes it: returns the value and its length. The reader is then ready for
    /// the next frame at the start of the buffer the caller left after consuming that length.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
        let Some(len) = self.check(buf)? else {
            return Ok(None);
        };
        *self = FrameReader::new(self.limits);
        Ok(Some((build(&buf[..len])?, len)))
    }

    fn check(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            let end = match kind {
                b'+' | b'-' => {
                    let from = self.searched.max(self.pos + 1);
                    let Some(nl) = memchr::memchr(b'\n', &buf[from..]) else {
                        self.searched = buf.len();
                        return Ok(None);
                    };
                    let nl = from + nl;
                    if buf[nl - 1] != b'\r' {
                        return Err(RespError::BareLf);
                    }
                    self.searched = 0;
                    nl + 1
                }
                b':' => match number_line(buf, self.pos)? {
                    Some((_, end)) => end,
                    None => return Ok(None),
                },
                b'$' => {
                    let Some((len, body)) = number_line(buf, self.pos)? else {
                        return Ok(None);
                    };
                    if len < -1 {
                        return Err(RespError::BadNumber);
                    }
                    if len == -1 {
                        body
                    } else {
                        let end = body.checked_add(len as usize).ok_or(RespError::BadNumber)?;
                        match buf.get(end..end.saturating_add(2)) {
                            Some(b"\r\n") => end + 2,
                            Some(crlf) if crlf.len() == 2 => return Err(RespError::MissingCrlf),
                            _ => return Ok(None),
                        }
                    }
                }
                b'*' => {
                    let Some((n, end)) = number_line(buf, self.pos)? else {
                        return Ok(None);
                    };
                    if n < -1 {
                        return Err(RespError::BadNumber);
                    }
                    if n > 0 {
                        if self.open.len() >= self.limits.max_depth {
                            return Err(RespError::TooDeep(self.limits.max_depth));
                        }
                        self.count_element()?;
                        self.open.push(n as u64);
                        self.pos = end;
                        continue;
                    }
                    end
                }
                other => return Err(RespError::UnknownType(other)),
            };
            self.count_element()?;
            self.pos = end;
            // One element done: close every array it completes.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(due) => {
                        *due -= 1;
                        if *due > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }

    fn count_element(&mut self) -> Result<(), RespError> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(RespError::TooManyElements(self.limits.max_elements));
        }
        Ok(())
    }
}

/// Builds the value of one frame [`FrameReader::check`] found whole and within limits, with a stack of
/// open arrays (no recursion).
fn build(frame: &[u8]) -> Result<Value, RespError> {
    let mut open: Vec<(Vec<Value>, usize)> = Vec::new();
    let mut pos = 0;
    loop {
        let kind = *frame.get(pos).ok_or(RespError::BadNumber)?;
        let (mut value, end) = match kind {
            b'+' | b'-' => {
                let nl = pos + memchr::memchr(b'\n', &frame[pos..]).ok_or(RespError::BareLf)?;
                let text = frame.get(pos + 1..nl.saturating_sub(1)).ok_or(RespError::BareLf)?;
                let value = if kind == b'+' {
                    Value::SimpleString(text.to_vec())
                } else {
                    Value::Error(String::from_utf8_lossy(text).into_owned())
                };
                (value, nl + 1)
            }
            b':' => {
                let (n, end) = number_line(frame, pos)?.ok_or(RespError::BadNumber)?;
                (Value::Integer(n), end)
            }
            b'$' => {
                let (len, body) = number_line(frame, pos)?.ok_or(RespError::BadNumber)?;
                if len < 0 {
                    (Value::Null, body)
                } else {
                    let end = body.saturating_add(len as usize);
                    let bytes = frame.get(body..end).ok_or(RespError::BadNumber)?;
                    (Value::BulkString(bytes.to_vec()), end.saturating_add(2))
                }
            }
            b'*' => {
                let (n, end) = number_line(frame, pos)?.ok_or(RespError::BadNumber)?;
                if n > 0 {
                    // The count was checked against elements present, so this is bounded by the frame.
                    open.push((Vec::with_capacity((n as usize).min(1024)), n as usize));
                    pos = end;
                    continue;
                }
                (if n < 0 { Value::Null } else { Value::Array(Vec::new()) }, end)
            }
            other => return Err(RespError::UnknownType(other)),
        };
        pos = end;
        loop {
            let Some((items, due)) = open.last_mut() else {
                return Ok(value);
            };
            items.push(value);
            if items.len() < *due {
                break;
            }
            let Some((items, _)) = open.pop() else {
                return Err(RespError::BadNumber);
            };
            value = Value::Array(items);
        }
    }
}

/// A complete `+text\r\n` or `-text\r\n` line, read without a RESP decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyLine<'a> {
    /// `+text`.
    Simple(&'a [u8]),
    /// `-text`.
    Error(&'a [u8]),
}

/// Reads one whole line (its `\r\n` included, nothing after) as a simple string or an error.
pub fn reply_line(line: &[u8]) -> Result<ReplyLine<'_>, RespError> {
    let body = line.strip_suffix(b"\r\n").ok_or(RespError::BareLf)?;
    match body.split_first() {
        Some((b'+', text)) => Ok(ReplyLine::Simple(text)),
        Some((b'-', text)) => Ok(ReplyLine::Error(text)),
        Some((&other, _)) => Err(RespError::UnknownType(other)),
        None => Err(RespError::BareLf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_depth: 2, max_elements: 100 };

    fn read_all(bytes: &[u8], step: usize) -> Result<Option<(Value, usize)>, RespError> {
        let mut r = FrameReader::new(LIMITS);
        let mut upto = 0;
        loop {
            upto = (upto + step).min(bytes.len());
            if let Some(found) = r.next(&bytes[..upto])? {
                return Ok(Some(found));
            }
            if upto == bytes.len() {
                return Ok(None);
            }
        }
    }

    #[test]
    fn a_config_get_answer_reads_the_same_at_every_split() {
        let bytes = b"*4\r\n$12\r\nrepl-timeout\r\n$2\r\n60\r\n$4\r\nnull\r\n$-1\r\n+tail";
        let frame_len = bytes.len() - 5;
        for step in 1..=bytes.len() {
            let (v, used) = read_all(bytes, step).expect("valid").expect("complete");
            assert_eq!(used, frame_len, "step {step}");
            assert_eq!(
                v,
                Value::Array(vec![
                    Value::BulkString(b"repl-timeout".to_vec()),
                    Value::BulkString(b"60".to_vec()),
                    Value::BulkString(b"null".to_vec()),
                    Value::Null,
                ])
            );
        }
    }

    #[test]
    fn nesting_past_the_cap_is_an_error_not_a_stack() {
        let deep = b"*1\r\n".repeat(100_000);
        assert_eq!(read_all(&deep, 4096), Err(RespError::TooDeep(2)));
        let ok = b"*1\r\n*2\r\n:1\r\n-ERR x\r\n";
        assert_eq!(
            read_all(ok, 1),
            Ok(Some((
                Value::Array(vec![Value::Array(vec![Value::Integer(1), Value::Error("ERR x".into())])]),
                ok.len()
            )))
        );
    }

    #[test]
    fn a_huge_count_or_length_reserves_nothing_and_waits_for_the_bytes() {
        assert_eq!(read_all(b"*9223372036854775807\r\n", 3), Ok(None));
        assert_eq!(read_all(b"*1\r\n*9223372036854775807\r\n:1\r\n", 3), Ok(None));
        assert_eq!(read_all(b"$9223372036854775807\r\nabc", 3), Ok(None));
        assert_eq!(read_all(b"$99999999999999999999\r\n", 3), Err(RespError::BadNumber));
        assert_eq!(read_all(b"$-2\r\n", 3), Err(RespError::BadNumber));
        assert_eq!(read_all(b"$3\r\nabcd\r\n", 3), Err(RespError::MissingCrlf));
        assert_eq!(read_all(b"?\r\n", 3), Err(RespError::UnknownType(b'?')));
    }

    #[test]
    fn too_many_elements_is_an_error() {
        let mut many = b"*200\r\n".to_vec();
        many.extend(b":1\r\n".repeat(200));
        assert_eq!(read_all(&many, 64), Err(RespError::TooManyElements(100)));
    }

    #[test]
    fn a_long_line_arriving_a_byte_at_a_time_is_searched_once() {
        let mut r = FrameReader::new(LIMITS);
        let mut line = b"+".to_vec();
        line.extend(std::iter::repeat_n(b'x', 10_000));
        for i in 1..=line.len() {
            assert_eq!(r.next(&line[..i]), Ok(None));
        }
        assert_eq!(r.searched, line.len(), "the search resumes where it stopped");
        line.extend(b"\r\n");
        assert_eq!(r.next(&line).map(|f| f.map(|(_, n)| n)), Ok(Some(line.len())));
    }

    fn flat(bytes: &[u8], step: usize) -> Result<Option<Vec<Vec<u8>>>, RespError> {
        let mut c = FlatCommand::default();
        let mut upto = 0;
        loop {
            upto = (upto + step).min(bytes.len());
            if let Some(len) = c.resume(&bytes[..upto])? {
                assert!(len <= upto);
                return Ok(Some(c.args().iter().map(|&(s, e)| bytes[s..e].to_vec()).collect()));
            }
            if upto == bytes.len() {
                return Ok(None);
            }
        }
    }

    #[test]
    fn a_flat_command_reads_the_same_at_every_split_and_refuses_anything_nested() {
        let bytes = b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nack\r\n$0\r\n\r\n";
        for step in 1..=bytes.len() {
            let args = flat(bytes, step).expect("valid").expect("complete");
            assert_eq!(args, vec![b"REPLCONF".to_vec(), b"ack".to_vec(), Vec::new()]);
        }
        assert_eq!(flat(&b"*1\r\n".repeat(10_000), 7), Err(RespError::NotBulk));
        assert_eq!(flat(b"*2\r\n$1\r\na\r\n:1\r\n", 1), Err(RespError::NotBulk));
        assert_eq!(flat(b"*1\r\n$-1\r\n", 1), Err(RespError::NotBulk));
        assert_eq!(flat(b"*0\r\n", 1), Err(RespError::Empty));
        assert_eq!(flat(b"*-1\r\n", 1), Err(RespError::Empty));
        assert_eq!(flat(b"*-7\r\n", 1), Err(RespError::BadNumber));
        assert_eq!(flat(b"*1\n", 1), Err(RespError::BareLf));
        assert_eq!(flat(b"*1\r\n$1\r\nab\r\n", 1), Err(RespError::MissingCrlf));
        assert_eq!(flat(b"*9223372036854775807\r\n$1\r\na\r\n", 5), Ok(None));
        assert_eq!(flat(b"*1\r\n$9223372036854775807\r\n", 5), Ok(None));
        assert_eq!(flat(b"+OK\r\n", 1), Err(RespError::NotArray));
    }

    #[test]
    fn reply_lines() {
        assert_eq!(reply_line(b"+PONG\r\n"), Ok(ReplyLine::Simple(b"PONG")));
        assert_eq!(reply_line(b"-NOAUTH x\r\n"), Ok(ReplyLine::Error(b"NOAUTH x")));
        assert_eq!(reply_line(b"+PONG\n"), Err(RespError::BareLf));
        assert_eq!(reply_line(b"*1\r\n"), Err(RespError::UnknownType(b'*')));
    }
}
