//! Replica→master: RESP commands (flat arrays of bulk strings, read by [`FlatCommand`]; anything nested
//! is a desync), inline commands
//! (`SYNC\r\n`, `PING\r\n`, framed by hand) and stray `\n` keepalives, classified into
//! [`ReplicaCommand`]s.
//!
//! A connection whose first non-handshake command comes before any `PSYNC`/`SYNC` is a plain client: it
//! is reported once and no longer interpreted. Passwords are dropped as soon as a command is parsed,
//! and the bytes that held them are zeroed.

use crate::wire::event::{
    DesyncReason, Event, EventSink, PsyncId, ReplId, ReplconfOption, ReplicaCommand, WirePhase, lossy_capped,
};
use crate::wire::line::{BoundedBuf, trim_eol};
use crate::wire::resp::FlatCommand;

/// Largest replica-side command replscope reads (REPLCONF/PSYNC/AUTH are tens of bytes).
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

/// What the command decoder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Commands,
    /// A plain client: forwarded, not interpreted.
    Passthrough,
    /// Gave up after a desync.
    Opaque,
}

/// Decodes the replica→master direction of one connection.
#[derive(Debug)]
pub struct CommandDecoder {
    mode: Mode,
    buf: BoundedBuf,
    /// Direction bytes already consumed out of `buf`.
    consumed: u64,
    /// A PSYNC or SYNC was seen: this is a replication connection, never a plain client.
    synced: bool,
    /// The RESP command at the front of `buf`, read as far as it has arrived.
    resp: FlatCommand,
    /// For an inline command at the front of `buf`: bytes already searched for its `\n` (so a line that
    /// arrives a byte at a time is searched once, not once per byte).
    inline_searched: usize,
}

impl Default for CommandDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of a command, borrowed from the buffer.
type Args<'a> = Vec<&'a [u8]>;

impl CommandDecoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        CommandDecoder {
            mode: Mode::Commands,
            buf: BoundedBuf::new(MAX_COMMAND_LEN),
            consumed: 0,
            synced: false,
            resp: FlatCommand::default(),
            inline_searched: 0,
        }
    }

    /// Whether the connection turned out to be a plain client.
    pub fn is_plain_client(&self) -> bool {
        self.mode == Mode::Passthrough
    }

    /// Whether the decoder gave up on this direction.
    pub fn is_opaque(&self) -> bool {
        self.mode == Mode::Opaque
    }

    /// Decodes `input`, pushing what it says onto `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut impl EventSink) {
        while self.mode == Mode::Commands {
            let take = input.len().min(self.buf.room());
            self.buf.extend(&input[..take]);
            input = &input[take..];
            while self.mode == Mode::Commands && self.next(out) {}
            if input.is_empty() || self.mode != Mode::Commands {
                break;
            }
        }
        if self.mode != Mode::Commands {
            self.buf.clear();
        }
    }

    /// Takes one frame off the buffer if a whole one is there. Returns whether it made progress.
    fn next(&mut self, out: &mut impl EventSink) -> bool {
        let Some(&first) = self.buf.bytes().first() else {
            return false;
        };
        if first == b'\n' {
            out.push(Event::Newline);
            self.take(1);
            return true;
        }
        let parsed = if first == b'*' { self.resp() } else { self.inline() };
        match parsed {
            Ok(Some((command, used))) => {
                self.take(used);
                self.classify(command, out);
                true
            }
            Ok(None) => {
                if self.buf.room() == 0 {
                    // A frame larger than any replication command: a client's, if its name says so.
                    match peek_name(self.buf.bytes()) {
                        Some(name) if !self.synced && !is_replication_command(&name) => {
                            out.push(Event::PlainClient { first_command: name });
                            self.mode = Mode::Passthrough;
                        }
                        _ => {
                            self.desync(out, DesyncReason::TooLong { what: "replica command", limit: MAX_COMMAND_LEN })
                        }
                    }
                }
                false
            }
            Err(reason) => {
                self.desync(out, reason);
                false
            }
        }
    }

    fn take(&mut self, n: usize) {
        self.resp.reset();
        self.inline_searched = 0;
        self.buf.consume(n);
        self.consumed += n as u64;
    }

    fn desync(&mut self, out: &mut impl EventSink, reason: DesyncReason) {
        out.push(Event::Desync { offset: self.consumed, phase: WirePhase::Handshake, reason });
        self.mode = Mode::Opaque;
    }

    /// A RESP array of bulk strings, once complete.
    fn resp(&mut self) -> Result<Option<(ReplicaCommand, usize)>, DesyncReason> {
        let buf = self.buf.bytes();
        let used = match self.resp.resume(buf) {
            Ok(Some(used)) => used,
            Ok(None) => return Ok(None),
            Err(e) => return Err(DesyncReason::InvalidResp(e)),
        };
        let args: Args<'_> = self.resp.args().iter().map(|&(start, end)| &buf[start..end]).collect();
        Ok(Some((command_from_args(&args), used)))
    }

    /// An inline command line (`SYNC\r\n`).
    fn inline(&mut self) -> Result<Option<(ReplicaCommand, usize)>, DesyncReason> {
        let buf = self.buf.bytes();
        let from = self.inline_searched.min(buf.len());
        let Some(end) = memchr::memchr(b'\n', &buf[from..]).map(|i| from + i) else {
            self.inline_searched = buf.len();
            return Ok(None);
        };
        let args: Args<'_> =
            trim_eol(&buf[..=end]).split(|b| *b == b' ' || *b == b'\t').filter(|a| !a.is_empty()).collect();
        if args.is_empty() {
            // `\r\n` alone: an empty line, which servers ignore like a lone `\n`.
            return Ok(Some((ReplicaCommand::Other(String::new()), end + 1)));
        }
        Ok(Some((command_from_args(&args), end + 1)))
    }

    fn classify(&mut self, command: ReplicaCommand, out: &mut impl EventSink) {
        match &command {
            ReplicaCommand::Other(name) if name.is_empty() => {
                out.push(Event::Newline);
                return;
            }
            ReplicaCommand::Other(name) if !self.synced => {
                out.push(Event::PlainClient { first_command: name.clone() });
                self.mode = Mode::Passthrough;
                return;
            }
            ReplicaCommand::Psync { .. } | ReplicaCommand::Sync => self.synced = true,
            _ => {}
        }
        out.push(Event::Command { command });
    }
}

fn is_replication_command(upper_name: &str) -> bool {
    matches!(upper_name, "PING" | "AUTH" | "REPLCONF" | "PSYNC" | "SYNC")
}

fn upper_name(arg: &[u8]) -> String {
    lossy_capped(arg, 32).to_ascii_uppercase()
}

/// The command's name from the start of an incomplete RESP array (`*N\r\n$L\r\n<name>`).
fn peek_name(buf: &[u8]) -> Option<String> {
    if buf.first() != Some(&b'*') {
        let end = buf.iter().position(|b| *b == b' ' || *b == b'\r' || *b == b'\n').unwrap_or(buf.len());
        return Some(upper_name(&buf[..end]));
    }
    let count_end = memchr::memmem::find(buf, b"\r\n")?;
    let rest = buf.get(count_end + 2..)?;
    let rest = rest.strip_prefix(b"$")?;
    let len_end = memchr::memmem::find(rest, b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..len_end]).ok()?.parse().ok()?;
    let name = rest.get(len_end + 2..len_end + 2 + len)?;
    Some(upper_name(name))
}

fn parse_int<T: std::str::FromStr>(arg: &[u8]) -> Option<T> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn text(arg: &[u8]) -> String {
    lossy_capped(arg, 64)
}

fn command_from_args(args: &[&[u8]]) -> ReplicaCommand {
    let name = upper_name(args[0]);
    let rest = &args[1..];
    match name.as_str() {
        "PING" => ReplicaCommand::Ping,
        // AUTH <password> or AUTH <user> <password>: the user is kept, the password never is.
        "AUTH" => ReplicaCommand::Auth { user: (rest.len() == 2).then(|| text(rest[0])) },
        "REPLCONF" => ReplicaCommand::Replconf(rest.chunks(2).map(replconf_option).collect()),
        "PSYNC" if rest.len() == 2 || rest.len() == 3 => {
            let replid = if rest[0] == b"?" { Some(PsyncId::Unknown) } else { ReplId::parse(rest[0]).map(PsyncId::Id) };
            let failover = rest.get(2).is_some_and(|a| a.eq_ignore_ascii_case(b"FAILOVER"));
            match (replid, parse_int::<i64>(rest[1])) {
                (Some(replid), Some(offset)) => ReplicaCommand::Psync { replid, offset, failover },
                _ => ReplicaCommand::Other(name),
            }
        }
        "SYNC" => ReplicaCommand::Sync,
        _ => ReplicaCommand::Other(name),
    }
}

fn replconf_option(pair: &[&[u8]]) -> ReplconfOption {
    let key = lossy_capped(pair[0], 32).to_ascii_lowercase();
    let Some(&value) = pair.get(1) else {
        return ReplconfOption::Other(key);
    };
    let flag = |v: &[u8]| match v {
        b"1" => Some(true),
        b"0" => Some(false),
        _ => None,
    };
    let parsed = match key.as_str() {
        "listening-port" => parse_int(value).map(ReplconfOption::ListeningPort),
        "ip-address" => Some(ReplconfOption::IpAddress(text(value))),
        "capa" => Some(ReplconfOption::Capa(text(value))),
        "version" => Some(ReplconfOption::Version(text(value))),
        "ack" => parse_int(value).map(ReplconfOption::Ack),
        "fack" => parse_int(value).map(ReplconfOption::Fack),
        "getack" => Some(ReplconfOption::GetAck),
        "rdb-only" => flag(value).map(ReplconfOption::RdbOnly),
        "rdb-channel" => flag(value).map(ReplconfOption::RdbChannel),
        "rdb-filter-only" => Some(ReplconfOption::RdbFilterOnly(text(value))),
        "main-ch-client-id" => parse_int(value).map(ReplconfOption::MainChClientId),
        "set-rdb-client-id" => parse_int(value).map(ReplconfOption::SetRdbClientId),
        _ => None,
    };
    parsed.unwrap_or(ReplconfOption::Other(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], chunk: usize) -> Vec<Event> {
        let mut d = CommandDecoder::new();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            d.feed(c, &mut out);
        }
        out
    }

    fn cmd(c: ReplicaCommand) -> Event {
        Event::Command { command: c }
    }

    #[test]
    fn handshake_commands_are_classified() {
        let wire = b"*1\r\n$4\r\nPING\r\n*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$9\r\ns3cret-pw\r\n\
*5\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n$4\r\ncapa\r\n$6\r\npsync2\r\n\
*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n\n\n\
*5\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$2\r\n71\r\n$4\r\nFACK\r\n$2\r\n70\r\n";
        let expected = vec![
            cmd(ReplicaCommand::Ping),
            cmd(ReplicaCommand::Auth { user: Some("alice".into()) }),
            cmd(ReplicaCommand::Replconf(vec![
                ReplconfOption::Capa("eof".into()),
                ReplconfOption::Capa("psync2".into()),
            ])),
            cmd(ReplicaCommand::Psync { replid: PsyncId::Unknown, offset: -1, failover: false }),
            Event::Newline,
            Event::Newline,
            cmd(ReplicaCommand::Replconf(vec![ReplconfOption::Ack(71), ReplconfOption::Fack(70)])),
        ];
        for chunk in 1..=wire.len() {
            let got = decode(wire, chunk);
            assert_eq!(got, expected, "chunk {chunk}");
            assert!(!format!("{got:?}").contains("s3cret"));
        }
    }

    #[test]
    fn inline_commands_and_password_free_inline_auth() {
        let got = decode(b"AUTH hunter2\r\nSYNC\r\n", 3);
        assert_eq!(got, vec![cmd(ReplicaCommand::Auth { user: None }), cmd(ReplicaCommand::Sync)]);
    }

    #[test]
    fn a_client_is_recognised_by_its_first_foreign_command() {
        let mut d = CommandDecoder::new();
        let mut out = Vec::new();
        d.feed(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nINFO\r\n", &mut out);
        assert_eq!(out, vec![cmd(ReplicaCommand::Ping), Event::PlainClient { first_command: "GET".into() }]);
        assert!(d.is_plain_client());
    }

    #[test]
    fn a_huge_client_command_is_a_client_not_a_desync() {
        let mut wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$200000\r\n".to_vec();
        wire.extend(std::iter::repeat_n(b'x', 200_000));
        let got = decode(&wire, 10_000);
        assert_eq!(got, vec![Event::PlainClient { first_command: "SET".into() }]);
    }

    #[test]
    fn garbage_gives_one_desync() {
        let got = decode(b"*1\r\n$4\r\nPING\r\n*x\r\nmore garbage\r\n*1\r\n", 4);
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Event::Desync { offset: 14, phase: WirePhase::Handshake, .. }), "{got:?}");
        let got = decode(b"*1\r\n$4\r\nPSYNC\r\n", 4);
        assert!(matches!(got[..], [Event::Desync { offset: 0, .. }]), "{got:?}");
    }

    #[test]
    fn commands_after_psync_are_never_a_client() {
        let got = decode(b"SYNC\r\n*1\r\n$4\r\nINFO\r\n", 2);
        assert_eq!(got, vec![cmd(ReplicaCommand::Sync), cmd(ReplicaCommand::Other("INFO".into()))]);
    }

    #[test]
    fn a_command_that_arrives_a_byte_at_a_time_is_read_once_not_once_per_byte() {
        // An inline line and a RESP command, each 60 000 bytes, fed one byte per read.
        let mut d = CommandDecoder::new();
        let mut out = Vec::new();
        let inline = [vec![b'X'; 60_000], b"\r\n".to_vec()].concat();
        for b in &inline[..inline.len() - 1] {
            d.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(d.inline_searched, inline.len() - 1, "the search resumes where it stopped");
        d.feed(b"\n", &mut out);
        assert_eq!(out, vec![Event::PlainClient { first_command: "X".repeat(32) }]);

        let mut d = CommandDecoder::new();
        let mut out = Vec::new();
        let long = "a".repeat(60_000);
        let resp = crate::wire::encode_command(&["REPLCONF", "ip-address", &long]);
        for b in &resp {
            d.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(matches!(&out[0], Event::Command { command: ReplicaCommand::Replconf(_) }));
    }
}
