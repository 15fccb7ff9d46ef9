//! Why a link ended, in plain words, with its numbers and one concrete suggestion: what an on-call
//! engineer reads first in `/api/links`, `replscope links` and the WARN log line.

use crate::link::cause::{Cause, Diagnosis, Evidence};
use crate::link::history::ReplicaHistory;
use crate::link::output_buffer::{BufferAtClose, LimitReached};
use crate::link::settings::{ServerSettings, SettingUsed};
use crate::link::{ClosedBy, Link, Phase, PsyncRefusal, RefusalReason, ReplicaBufferFull, SyncAnswer};
use crate::observe::words::{human_bytes, short};
use crate::wire::{ErrorCode, TrailerCheck};

fn mb(bytes: f64) -> String {
    let m = bytes / 1e6;
    if m < 10.0 { format!("{m:.1} MB") } else { format!("{m:.0} MB") }
}

/// The setting named `name` that the evidence was judged against.
fn setting<'a>(e: &'a Evidence, name: &str) -> Option<&'a SettingUsed> {
    e.settings.iter().find(|s| s.setting == name)
}

/// How a timeout's explanation names the setting: the stated one, or what the silence proves of it.
fn timeout_words(e: &Evidence, silence: f64) -> String {
    match setting(e, "repl-timeout") {
        Some(t) => format!("past {}", t.describe()),
        None => format!(
            "so its repl-timeout is below {silence:.1} s (state it with --assume-repl-timeout to be judged against it)"
        ),
    }
}

/// Rounds up to a power of two in megabytes, as a limit one would actually configure.
fn suggest_mb(bytes: f64) -> u64 {
    let mut m = 1u64;
    while (m as f64) * 1024.0 * 1024.0 < bytes {
        m *= 2;
    }
    m
}

/// The explanation of a diagnosed link; `record` is the replica's history (for a loop). The server
/// settings it names are those of the evidence, each said to be read from the master, assumed or the
/// default.
pub fn explain(link: &Link, d: &Diagnosis, record: Option<&ReplicaHistory>) -> String {
    let e = &d.evidence;
    let by = match e.closed_by {
        ClosedBy::Master => "the master",
        ClosedBy::Replica => "the replica",
        ClosedBy::Proxy => "replscope",
    };
    let mut text = match d.cause {
        Cause::OutputBufferLimit if e.phase == Phase::Streaming => {
            match e.output_buffer.as_ref().filter(|b| b.reached.is_some()) {
                Some(b) => format!(
                    "{by} closed the link while streaming: {}; the replica's output buffer on the master overflowed; raise \
                 client-output-buffer-limit replica, or find why the replica reads slowly",
                    buffer_words(b)
                ),
                None => format!(
                    "{by} closed the link while streaming toward the replica was backed up (forwarding waited {:.1} s on the replica): \
                 the replica's output buffer on the master overflowed; raise client-output-buffer-limit replica, or find why the replica reads slowly",
                    e.blocked_replica_seconds
                ),
            }
        }
        Cause::OutputBufferLimit => output_buffer(link, d),
        Cause::MasterTimeout => format!(
            "{by} closed the link after the replica had sent nothing (no ACK, no keepalive) for {:.1} s: the master's repl-timeout ran out, \
             {}; look for pauses on the replica (a fork, swapping, a long command) or raise repl-timeout",
            e.replica_silent_seconds,
            timeout_words(e, e.replica_silent_seconds)
        ),
        Cause::ReplicaTimeout => format!(
            "{by} closed the link after nothing had come from the master for {:.1} s: the replica's repl-timeout ran out, \
             {}; look for stalls on the master or the network, or raise repl-timeout on the replica",
            e.master_silent_seconds,
            timeout_words(e, e.master_silent_seconds)
        ),
        Cause::ReplicaLoadFailed => {
            let rdb = link.rdb.as_ref();
            let written = rdb.and_then(|r| r.server_version()).unwrap_or("an unknown version");
            let version = rdb.and_then(|r| r.version()).map_or(String::new(), |v| format!(" (RDB version {v})"));
            let replica = link.handshake.version.as_deref().map_or(String::new(), |v| format!(" ({v})"));
            format!(
                "{by} closed the link while loading the {} RDB written by {written}{version}, then came back for another full sync: \
                 loading failed; check the replica's log — can this replica{replica} read that RDB version? is its disk or memory short?",
                human_bytes(e.rdb_size.unwrap_or(0) as f64)
            )
        }
        Cause::ReplicaQueryBufferLimit => format!(
            "{by} closed the link as the master sent it a {} stream command, and came back: the replica would not buffer a command \
             that large from its master — client-query-buffer-limit on the replica (Redis 6.2 and older apply it to the master's \
             link; 7.0+ and Valkey do not); raise it on the replica above the largest values written, or write smaller values",
            human_bytes(link.close.and_then(|c| crate::link::rules::large_command(link, c.at)).unwrap_or(0) as f64),
        ),
        Cause::ChecksumMismatch => match link.rdb.as_ref().and_then(|r| r.trailer) {
            Some(TrailerCheck::Mismatch { expected, computed }) => format!(
                "the RDB's trailer says {expected:016x} but the bytes forwarded hash to {computed:016x}: the snapshot was corrupted \
                 before it reached replscope (the master's disk or memory); the replica will reject it and retry"
            ),
            _ => "the RDB's checksum did not match the bytes forwarded".into(),
        },
        Cause::ProtocolError => {
            let what = link.desyncs.last().map_or(String::new(), |x| format!(" ({} at byte {})", x.reason, x.offset));
            format!(
                "{by} closed the link right after bytes replscope could not follow{what}: a corrupted stream or an unknown protocol extension"
            )
        }
        Cause::ReplicaLeft => format!(
            "{by} closed the link and did not come back within 10 s: REPLICAOF NO ONE, a shutdown, or it moved; nothing to fix if that was intended"
        ),
        Cause::MasterShutdown => format!(
            "{by} shut down ({}): expected during maintenance; the replica resyncs when it is back",
            e.later.first().map_or("it asked the replica for its offset, then closed", String::as_str)
        ),
        Cause::MasterClosed => format!(
            "{by} closed the link in {} with no sign of a timeout or a full buffer: CLIENT KILL, a crash or a failover; \
             the master's log at that moment says which",
            e.phase.as_str()
        ),
        Cause::HandshakeRejected => {
            let code = e.error_code.clone().unwrap_or(ErrorCode::Err);
            let fix = match code {
                ErrorCode::Wrongpass | ErrorCode::Noauth => "check masterauth (and masteruser) on the replica",
                ErrorCode::Noperm => {
                    "the master's ACL user lacks a permission the replica needs (+psync, +replconf, +ping)"
                }
                ErrorCode::Loading => "the master is loading its dataset; the replica retries",
                ErrorCode::Masterdown | ErrorCode::Nomasterlink => {
                    "the master is itself a replica without its own master"
                }
                _ => "the master's log says why",
            };
            format!("the master refused the handshake with {}: {fix}", format!("{code:?}").to_uppercase())
        }
        Cause::ConnectFailed => format!(
            "replscope could not reach the master ({}): check --master and that the master is up",
            link.connect_error.as_deref().unwrap_or("no connection")
        ),
        Cause::FaultInjected => {
            let f = link.faults.iter().rev().find(|f| f.kind.closes_link());
            f.map_or("one of replscope's faults closed the link, as asked".into(), |f| {
                format!("fault {} ({}) closed the link, as asked: {}", f.fault, f.kind, f.action)
            })
        }
        Cause::ProxyShutdown => "replscope stopped and closed the link".into(),
        Cause::Completed => format!(
            "a snapshot client (a backup with redis-cli --rdb, or redis-cli --replica) took the whole {} payload and hung up: \
             the normal end, nothing to fix",
            human_bytes(e.rdb_size.or(e.rdb_bytes).unwrap_or(0) as f64)
        ),
        Cause::NetworkReset => format!(
            "{by}'s side sent a TCP reset that nothing else explains: look for a firewall or load balancer dropping idle or long connections, or a crashed process"
        ),
    };
    if let Some(r) = record
        && r.partial.in_loop
        && link.dropped_partial_resync().is_some()
    {
        text.push_str(&format!(". Attempt {} of a partial-resync loop", r.partial.attempts.len()));
    }
    if let Some(r) = record
        && r.full.in_loop
        && matches!(
            d.cause,
            Cause::OutputBufferLimit
                | Cause::MasterTimeout
                | Cause::ReplicaTimeout
                | Cause::ReplicaLoadFailed
                | Cause::ReplicaQueryBufferLimit
        )
    {
        let span = r.full.span().as_secs_f64();
        let within = if span < 90.0 { format!("{span:.0} s") } else { format!("{:.0} minutes", span / 60.0) };
        text.push_str(&format!(
            ". Attempt {} in {within}: this replica is in a replication loop",
            r.full.attempts.len()
        ));
    }
    text
}

/// The partial-resync loop of a replica, in plain words: the pattern, the largest command at each drop,
/// and what would break it; `limit` is the output-buffer limit in force.
pub fn partial_loop(h: &ReplicaHistory, limit: &SettingUsed) -> String {
    let drops = &h.partial.attempts;
    let biggest = drops.iter().map(|(_, d)| d.largest_command_bytes).max().unwrap_or(0);
    let span = h.partial.span().as_secs_f64();
    let within = if span < 90.0 { format!("{span:.0} s") } else { format!("{:.0} minutes", span / 60.0) };
    let mut s = format!(
        "partial-resync loop: the master accepted {} partial resyncs in a row (+CONTINUE) within {within} and closed each \
         within {} s",
        drops.len(),
        crate::link::history::PARTIAL_DROP_WITHIN.as_secs(),
    );
    if biggest == 0 {
        s.push_str(
            "; no stream command reached the replica before any of the closes: the master dropped the link as soon as it \
             queued what it owed (the backlog since the replica's offset, a large write)",
        );
    } else {
        let largest: Vec<String> = drops.iter().map(|(_, d)| human_bytes(d.largest_command_bytes as f64)).collect();
        s.push_str(&format!("; the largest stream command before each close: {}", largest.join(", ")));
    }
    s.push_str(&format!(
        ". With {} in force, what a resumed replica is owed overflows its output buffer on the master as soon as it is \
         queued; it will not stop by itself: raise the hard limit above the largest values written{}, or stop writing \
         values that large",
        limit.describe(),
        if biggest > 0 { format!(" (at least {}mb)", suggest_mb(biggest as f64 * 2.0)) } else { String::new() }
    ));
    s
}

/// What a two-channel sync's replica that stopped reading its main channel means, and what to change.
pub fn replica_buffer_full(link: &Link, full: &ReplicaBufferFull) -> String {
    let setting = match link.answer {
        Some(SyncAnswer::RdbChannelSync { .. }) => {
            "replica-full-sync-buffer-limit (0: its client-output-buffer-limit replica hard limit)"
        }
        _ => "client-output-buffer-limit replica hard limit",
    };
    format!(
        "the replica stopped reading the stream on its main channel for {:.1} s while the RDB still crossed its \
         other channel: its own buffer for the stream was full (its {setting}); the stream piled up on the \
         master meanwhile. Not a drop: the sync goes on, at the cost of the master's memory; raise the \
         replica's limit if the master cannot afford it",
        full.not_reading.as_secs_f64()
    )
}

/// Why a partial resync was refused, in plain words, with its numbers and what to change where a
/// setting decides it.
pub fn refusal(r: &PsyncRefusal) -> String {
    match (r.reason, r.gap_bytes) {
        (RefusalReason::NoHistory, _) => {
            "the replica asked to resume exactly where the master stands, and the master still refused: it kept no \
             backlog to serve from (freed after repl-backlog-ttl with no replica attached); raise repl-backlog-ttl, or 0 to keep it"
                .to_string()
        }
        (RefusalReason::ReplidMismatch, _) => format!(
            "the master's history is {}…, not the one the replica asked for ({}…): the master restarted without its replication \
             state, failed over, or freed its backlog after repl-backlog-ttl with no replica attached; no backlog size would have helped",
            short(r.master_replid.as_str()),
            r.asked_replid.as_ref().map_or("?", |i| short(i.as_str()))
        ),
        (RefusalReason::ReplicaAhead, Some(gap)) => format!(
            "the replica asked for {} beyond the master's offset: a failover that lost writes, or a replica attached to an older \
             snapshot; the replica's extra history is discarded",
            human_bytes(-gap as f64)
        ),
        (RefusalReason::OffsetOutOfRange, Some(gap)) => backlog_gap(r, gap),
        (reason, None) => reason.as_str().to_string(),
    }
}

/// A gap the backlog did not cover: against the backlog stated or defaulted, and at the write rate seen.
fn backlog_gap(r: &PsyncRefusal, gap: i64) -> String {
    let gap_f = gap as f64;
    let mut s = format!(
        "the replica was {} behind ({gap} bytes, from the master's offset when its snapshot began)",
        human_bytes(gap_f)
    );
    let backlog = r.backlog.as_ref().and_then(|b| Some((b, crate::size::parse_size(&b.value).ok()? as f64)));
    let Some((setting, bytes)) = backlog else {
        s.push_str(", more than the master's backlog held: raise repl-backlog-size above the gap");
        return s;
    };
    let lasts = |b: f64| r.write_rate.filter(|w| *w > 0.0).map(|w| b / w);
    if gap_f <= bytes {
        s.push_str(&format!(
            ", which fits {}, yet the master refused: its backlog is smaller than that, or was freed (repl-backlog-ttl); \
             check repl_backlog_size and repl_backlog_histlen in the master's INFO replication",
            setting.describe()
        ));
        return s;
    }
    s.push_str(&format!(", more than {} holds", setting.describe()));
    if let Some(secs) = lasts(bytes) {
        s.push_str(&format!(
            "; at the master's {}/s of writes that backlog covers {secs:.1} s of disconnection",
            mb(r.write_rate.unwrap_or(0.0))
        ));
    }
    let suggested = suggest_mb(gap_f * 2.0);
    s.push_str(&format!(": raise repl-backlog-size to at least {suggested}mb"));
    if let Some(secs) = lasts((suggested << 20) as f64) {
        s.push_str(&format!(" (about {secs:.0} s at this write rate)"));
    }
    s
}

/// The classic case: the master killed a full sync because writes piled up past the replica's limit.
/// `omem 8.4 MB of the 8mb hard limit at the kill (…)`: the master's own reading of the replica's buffer.
pub fn buffer_words(b: &BufferAtClose) -> String {
    let mut limit = b.limit.split_whitespace();
    let (hard, soft, secs) = (limit.next().unwrap_or("?"), limit.next().unwrap_or("?"), limit.next().unwrap_or("?"));
    let when = match b.seconds_before_gone {
        Some(s) => format!("{s:.1} s before the master dropped the connection"),
        None => format!("{:.1} s before the close reached replscope", b.seconds_before_close),
    };
    let read = format!("read from the master {when}; obl {}, oll {}", b.obl, b.oll);
    match b.reached {
        Some(LimitReached::Hard) => {
            format!("omem {} of the {hard} hard limit at the kill ({read})", mb(b.omem as f64))
        }
        Some(LimitReached::Soft) => format!(
            "omem {} above the {soft} soft limit for {:.0} s of the {secs} s it allows ({read})",
            mb(b.omem as f64),
            b.seconds_over_soft.unwrap_or(0.0)
        ),
        None => format!("omem {} against the limit {} ({read})", mb(b.omem as f64), b.limit),
    }
}

fn output_buffer(link: &Link, d: &Diagnosis) -> String {
    let e = &d.evidence;
    let limit = setting(e, "client-output-buffer-limit replica")
        .cloned()
        .unwrap_or_else(|| ServerSettings::default().output_buffer_limit().1);
    let which = match limit.source {
        crate::link::settings::Source::Master => "the master's".to_string(),
        other => format!("the {}", other.as_str()),
    };
    let phase_words = match e.phase {
        Phase::WaitingBgsave => "while the master prepared the RDB".to_string(),
        Phase::Loading => "while the replica loaded the RDB".to_string(),
        _ => format!(
            "{:.0} s into the RDB transfer, after {} of {} at {}/s",
            e.seconds_in_phase,
            human_bytes(e.rdb_bytes.unwrap_or(0) as f64),
            e.rdb_size.map_or("?".into(), |s| human_bytes(s as f64)),
            human_bytes(e.rdb_rate.unwrap_or(0.0))
        ),
    };
    if let Some(b) = e.output_buffer.as_ref().filter(|b| b.reached.is_some()) {
        let mut s = format!(
            "the master closed the link {phase_words}: {}; the replica's output buffer outgrew {which} client-output-buffer-limit replica {}{}",
            buffer_words(b),
            limit.value,
            limit
                .in_effect
                .as_ref()
                .map_or(String::new(), |v| format!(" ({v} in effect: the hard limit is raised to repl-backlog-size)"))
        );
        // What the whole transfer would have needed, at the growth the master's readings showed.
        let left = match (e.rdb_size, e.rdb_rate) {
            (Some(size), Some(r)) if r > 0.0 => Some(size.saturating_sub(e.rdb_bytes.unwrap_or(0)) as f64 / r),
            _ => None,
        };
        match (left, b.growth_bytes_per_second.or(e.write_rate)) {
            (Some(left), Some(growth)) if growth > 0.0 => {
                let needed = b.projected_omem as f64 + growth * left;
                let hard = suggest_mb(needed * 2.0);
                s.push_str(&format!(
                    "; it grew {}/s, and the {left:.0} s of transfer left would have taken it to about {}: raise the replica limit to \
                     at least {hard}mb/{}mb, or make the transfer faster",
                    mb(growth),
                    mb(needed),
                    (hard / 2).max(1)
                ));
            }
            _ => s.push_str("; raise the replica limit, or make the transfer faster"),
        }
        return s;
    }
    let (Some(rate), Some(piled)) = (e.write_rate, e.accumulated_bytes) else {
        return format!(
            "the master closed the link {phase_words}, while writes were piling up for this replica (the write rate is not known yet): \
             the replica's output buffer outgrew {which} client-output-buffer-limit replica {}; compare it with write rate × transfer time, \
             or make the transfer faster",
            limit.value
        );
    };
    let mut s = format!(
        "the master closed the link {phase_words}; the master writes about {}/s, so about {} had piled up for this replica — above {which} \
         client-output-buffer-limit replica {}",
        mb(rate),
        mb(piled),
        limit.value
    );
    // What the whole transfer would have needed, at the rates seen.
    let total = match (link.phase_at(Phase::WaitingBgsave), e.rdb_size, e.rdb_rate) {
        (Some(_), Some(size), Some(r)) if r > 0.0 => {
            Some(piled / rate + size.saturating_sub(e.rdb_bytes.unwrap_or(0)) as f64 / r)
        }
        _ => None,
    };
    match total {
        Some(total) => {
            let needed = rate * total;
            let hard = suggest_mb(needed * 2.0);
            s.push_str(&format!(
                "; the transfer needs about {total:.0} s, by which time about {} will have piled up: raise the replica limit to at least \
                 {hard}mb/{}mb, or make the transfer faster",
                mb(needed),
                (hard / 2).max(1)
            ));
        }
        None => s.push_str("; raise the replica limit, or make the transfer faster"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{CloseHow, Fed, TransportEvent};
    use crate::time::Timestamp;
    use crate::wire::{Direction, encode_command as resp};

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    #[test]
    fn the_classic_case_reads_with_its_numbers_and_a_limit_to_set() {
        let mut links = Fed::new();
        let id = links.open(Some([10, 0, 0, 2].into()), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["REPLCONF", "listening-port", "6390"]), ms(0));
        links.on_bytes(id, Direction::ReplicaToMaster, &resp(&["PSYNC", "?", "-1"]), ms(0));
        links.on_bytes(
            id,
            Direction::MasterToReplica,
            b"+OK\r\n+FULLRESYNC 8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 0\r\n",
            ms(0),
        );
        links.on_bytes(id, Direction::MasterToReplica, b"$1438646272\r\nREDIS0011", ms(2000));
        // 812 MiB in 38 s of transfer.
        let chunk = vec![0u8; 1 << 20];
        for i in 0..812u64 {
            links.on_bytes(id, Direction::MasterToReplica, &chunk, ms(2000 + (i + 1) * 38_000 / 812));
        }
        links.on_transport(id, TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(40_000));
        // The master writes 3.5 MB/s (known from the stream of another replica, say).
        links.diagnose(ms(40_000));
        let link = links.get(id).expect("link");
        let mut d = link.diagnosis.clone().expect("diagnosed");
        d.evidence.write_rate = Some(3.5e6);
        d.evidence.accumulated_bytes = Some(3.5e6 * 40.0);
        let text = explain(link, &d, None);
        assert!(
            text.starts_with("the master closed the link 38 s into the RDB transfer, after 812.00 MiB of 1.34 GiB"),
            "{text}"
        );
        assert!(text.contains("the master writes about 3.5 MB/s, so about 140 MB had piled up"), "{text}");
        assert!(text.contains("above the default client-output-buffer-limit replica 256mb 64mb 60"), "{text}");
        assert!(
            text.contains("the transfer needs about 66 s, by which time about 232 MB will have piled up"),
            "{text}"
        );
        assert!(text.contains("raise the replica limit to at least 512mb/256mb"), "{text}");
    }

    fn refused(gap: i64, backlog: Option<u64>, write_rate: Option<f64>) -> PsyncRefusal {
        let id = crate::wire::ReplId::parse(b"8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39").expect("40 hex");
        let mut r = crate::link::refusal::classify(crate::wire::PsyncId::Id(id), 1001, id, 1000 + gap)
            .expect("a PSYNC with an id is refused");
        let settings = ServerSettings { backlog, ..Default::default() };
        r.backlog = Some(settings.backlog(false).1);
        r.write_rate = write_rate;
        r
    }

    #[test]
    fn a_gap_past_the_backlog_says_how_long_the_backlog_lasts_and_what_would() {
        let text = refusal(&refused(3_000_000, Some(1 << 20), Some(500_000.0)));
        assert!(text.starts_with("the replica was 2.86 MiB behind (3000000 bytes"), "{text}");
        assert!(text.contains("more than repl-backlog-size 1mb (assumed) holds"), "{text}");
        assert!(
            text.contains("at the master's 0.5 MB/s of writes that backlog covers 2.1 s of disconnection"),
            "{text}"
        );
        assert!(text.contains("raise repl-backlog-size to at least 8mb (about 17 s at this write rate)"), "{text}");
        // The default stands in when nothing was stated, and says so.
        let text = refusal(&refused(3_000_000, None, None));
        assert!(
            text.contains("more than repl-backlog-size 1mb (default) holds: raise repl-backlog-size to at least 8mb"),
            "{text}"
        );
        // A gap the stated backlog would hold: the statement, or the backlog, is wrong.
        let text = refusal(&refused(100_000, Some(1 << 20), None));
        assert!(text.contains("which fits repl-backlog-size 1mb (assumed), yet the master refused"), "{text}");
    }
}
