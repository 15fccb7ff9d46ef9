//! Why a link ended, in plain words, with its numbers and one concrete suggestion: what an on-call
//! engineer reads first in `/api/links`, `replscope links` and the WARN log line.

use crate::link::cause::{Cause, Diagnosis};
use crate::link::forecast::OutputBufferLimit;
use crate::link::history::ReplicaHistory;
use crate::link::{ClosedBy, Link, Phase};
use crate::observe::log::human_bytes;
use crate::wire::{ErrorCode, TrailerCheck};

/// Redis's and Valkey's default `client-output-buffer-limit replica`.
pub const DEFAULT_REPLICA_LIMIT: OutputBufferLimit =
    OutputBufferLimit { hard: 256 << 20, soft: 64 << 20, soft_seconds: 60 };

fn mb(bytes: f64) -> String {
    let m = bytes / 1e6;
    if m < 10.0 { format!("{m:.1} MB") } else { format!("{m:.0} MB") }
}

fn limit_text(l: &OutputBufferLimit) -> String {
    format!("{}mb {}mb {}", l.hard >> 20, l.soft >> 20, l.soft_seconds)
}

/// Rounds up to a power of two in megabytes, as a limit one would actually configure.
fn suggest_mb(bytes: f64) -> u64 {
    let mut m = 1u64;
    while (m as f64) * 1024.0 * 1024.0 < bytes {
        m *= 2;
    }
    m
}

/// The explanation of a diagnosed link; `assumed` is the operator's `--assume-output-buffer-limit`,
/// `record` the replica's history (for a loop).
pub fn explain(
    link: &Link,
    d: &Diagnosis,
    assumed: Option<OutputBufferLimit>,
    record: Option<&ReplicaHistory>,
) -> String {
    let e = &d.evidence;
    let by = match e.closed_by {
        ClosedBy::Master => "the master",
        ClosedBy::Replica => "the replica",
        ClosedBy::Proxy => "replscope",
    };
    let mut text = match d.cause {
        Cause::OutputBufferLimit if e.phase == Phase::Streaming => format!(
            "{by} closed the link while streaming toward the replica was backed up (forwarding waited {:.1} s on the replica): \
             the replica's output buffer on the master overflowed; raise client-output-buffer-limit replica, or find why the replica reads slowly",
            e.blocked_replica_seconds
        ),
        Cause::OutputBufferLimit => output_buffer(link, d, assumed),
        Cause::MasterTimeout => format!(
            "{by} closed the link after the replica had sent nothing (no ACK, no keepalive) for {:.1} s: the master's repl-timeout ran out; \
             look for pauses on the replica (a fork, swapping, a long command) or raise repl-timeout",
            e.replica_silent_seconds
        ),
        Cause::ReplicaTimeout => format!(
            "{by} closed the link after nothing had come from the master for {:.1} s: the replica's repl-timeout ran out; \
             look for stalls on the master or the network, or raise repl-timeout on the replica",
            e.master_silent_seconds
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
            let f = link.faults.iter().rev().find(|f| f.kind == "cut" || f.kind == "limit");
            f.map_or("one of replscope's faults closed the link, as asked".into(), |f| {
                format!("fault {} ({}) closed the link, as asked: {}", f.fault, f.kind, f.action)
            })
        }
        Cause::ProxyShutdown => "replscope stopped and closed the link".into(),
        Cause::NetworkReset => format!(
            "{by}'s side sent a TCP reset that nothing else explains: look for a firewall or load balancer dropping idle or long connections, or a crashed process"
        ),
    };
    if let Some(r) = record
        && r.in_loop
        && matches!(
            d.cause,
            Cause::OutputBufferLimit | Cause::MasterTimeout | Cause::ReplicaTimeout | Cause::ReplicaLoadFailed
        )
    {
        text.push_str(&format!(
            ". Attempt {} in {:.0} minutes: this replica is in a replication loop",
            r.failed_full_syncs.len(),
            (r.span().as_secs_f64() / 60.0).max(1.0)
        ));
    }
    text
}

/// The classic case: the master killed a full sync because writes piled up past the replica's limit.
fn output_buffer(link: &Link, d: &Diagnosis, assumed: Option<OutputBufferLimit>) -> String {
    let e = &d.evidence;
    let limit = assumed.unwrap_or(DEFAULT_REPLICA_LIMIT);
    let which = if assumed.is_some() { "the assumed" } else { "the default" };
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
    let (Some(rate), Some(piled)) = (e.write_rate, e.accumulated_bytes) else {
        return format!(
            "the master closed the link {phase_words}, while writes were piling up for this replica (the write rate is not known yet): \
             the replica's output buffer outgrew {which} client-output-buffer-limit replica {}; compare it with write rate × transfer time, \
             or make the transfer faster",
            limit_text(&limit)
        );
    };
    let mut s = format!(
        "the master closed the link {phase_words}; the master writes about {}/s, so about {} had piled up for this replica — above {which} \
         client-output-buffer-limit replica {}",
        mb(rate),
        mb(piled),
        limit_text(&limit)
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
    use crate::link::{CloseHow, Links, TransportEvent};
    use crate::time::Timestamp;
    use crate::wire::{Direction, encode_command as resp};

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_micros(n * 1000)
    }

    #[test]
    fn the_classic_case_reads_with_its_numbers_and_a_limit_to_set() {
        let mut links = Links::new();
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
        let text = explain(link, &d, None, None);
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
}
