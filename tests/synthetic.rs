//! Synthetic links for what the recordings do not show: keepalives in each place, EOF marks split across
//! reads, zero and corrupted checksums, payloads cut short, error lines instead of payloads, the SYNC
//! fallback, garbage in every phase, absurd lengths, plain clients, Redis 8's rdb channel, compressed
//! payloads, and passwords that must leave no trace.

use std::time::Duration;

use replscope::link::{
    CloseHow, ClosedBy, Fed, FedLink, Link, LinkId, LinkKind, Phase, SyncAnswer, SyncKind, SyncRequest, TransportEvent,
};
use replscope::time::Timestamp;
use replscope::wire::{
    CommandName, DesyncReason, Direction, ErrorCode, Event, PayloadFraming, TrailerCheck, WireEvent, WirePhase,
};

const M2R: Direction = Direction::MasterToReplica;
const R2M: Direction = Direction::ReplicaToMaster;
const REPLID: &str = "8f3a1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39";
const MARK: &str = "aa3d1c0e9b7d6a5f4e3d2c1b0a9f8e7d6c5b4a11";

fn ms(n: u64) -> Timestamp {
    Timestamp::from_micros(n * 1000)
}

use replscope::wire::encode_command as resp;

enum Crc {
    Real,
    Zero,
    Wrong,
}

/// A small RDB with `keys` string keys, its trailer computed by the `crc` crate (an independent oracle).
fn rdb(keys: usize, crc: Crc) -> Vec<u8> {
    let mut v = b"REDIS0011".to_vec();
    v.extend_from_slice(b"\xfa\x09redis-ver\x057.2.4\xfa\x0aredis-bits\xc0\x40");
    v.extend_from_slice(b"\xfe\x00");
    for i in 0..keys {
        let k = format!("key:{i}");
        let val = format!("value-{i}-{}", "x".repeat(i % 50));
        v.push(0);
        v.push(k.len() as u8);
        v.extend_from_slice(k.as_bytes());
        v.push(val.len() as u8);
        v.extend_from_slice(val.as_bytes());
    }
    v.push(0xff);
    let sum = crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&v);
    let trailer = match crc {
        Crc::Real => sum,
        Crc::Zero => 0,
        Crc::Wrong => sum ^ 0x10,
    };
    v.extend_from_slice(&trailer.to_le_bytes());
    v
}

fn handshake() -> Vec<(Direction, Vec<u8>)> {
    vec![
        (R2M, resp(&["PING"])),
        (M2R, b"+PONG\r\n".to_vec()),
        (
            R2M,
            [resp(&["REPLCONF", "listening-port", "6390"]), resp(&["REPLCONF", "capa", "eof", "capa", "psync2"])]
                .concat(),
        ),
        (M2R, b"+OK\r\n+OK\r\n".to_vec()),
        (R2M, resp(&["PSYNC", "?", "-1"])),
    ]
}

/// Feeds steps to one link, 1 ms apart from `start`. Returns every event.
fn feed(link: &mut FedLink, start: u64, steps: &[(Direction, Vec<u8>)]) -> Vec<WireEvent> {
    let mut all = Vec::new();
    for (i, (dir, bytes)) in steps.iter().enumerate() {
        all.extend_from_slice(link.on_bytes(*dir, bytes, ms(start + i as u64)));
    }
    all
}

fn phases(link: &Link) -> Vec<Phase> {
    link.phases.iter().map(|p| p.phase).collect()
}

fn fullresync(offset: i64) -> Vec<u8> {
    format!("+FULLRESYNC {REPLID} {offset}\r\n").into_bytes()
}

fn desyncs(events: &[WireEvent]) -> Vec<(Direction, u64, WirePhase)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Desync { offset, phase, .. } => Some((e.direction, *offset, *phase)),
            _ => None,
        })
        .collect()
}

#[test]
fn keepalives_in_each_place_are_events_with_their_time_and_never_offsets() {
    let mut link = FedLink::new(Some([10, 0, 0, 7].into()), ms(0));
    feed(&mut link, 0, &handshake());
    let payload = rdb(20, Crc::Real);
    let steps = vec![
        (M2R, b"\n".to_vec()),   // 100: fork not started yet
        (M2R, b"\n".to_vec()),   // 101
        (M2R, fullresync(500)),  // 102
        (M2R, b"\n\n".to_vec()), // 103: BGSAVE to disk running
        (M2R, b"\n".to_vec()),   // 104
        (M2R, [format!("${}\r\n", payload.len()).into_bytes(), payload].concat()), // 105
        (R2M, b"\n".to_vec()),   // 106: replica loading
        (R2M, b"\n".to_vec()),   // 107
        (R2M, resp(&["REPLCONF", "ACK", "500"])), // 108
        (M2R, resp(&["ping"])),  // 109
    ];
    let events = feed(&mut link, 100, &steps);
    let newlines: Vec<(Direction, Timestamp)> =
        events.iter().filter(|e| e.event == Event::Newline).map(|e| (e.direction, e.at)).collect();
    assert_eq!(
        newlines,
        vec![
            (M2R, ms(100)),
            (M2R, ms(101)),
            (M2R, ms(103)),
            (M2R, ms(103)),
            (M2R, ms(104)),
            (R2M, ms(106)),
            (R2M, ms(107))
        ]
    );
    assert_eq!(
        phases(&link),
        [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading, Phase::Streaming]
    );
    assert_eq!(link.phase_at(Phase::WaitingBgsave), Some(ms(102)));
    assert_eq!(link.phase_at(Phase::Loading), Some(ms(105)));
    assert_eq!(link.phase_at(Phase::Streaming), Some(ms(108)), "loading lasts until the first ACK, through the \\n's");
    assert_eq!((link.traffic[M2R.index()].newlines, link.traffic[R2M.index()].newlines), (5, 2));
    assert_eq!(link.traffic[R2M.index()].last_newline_at, Some(ms(107)));
    assert_eq!(link.stream.last_ack.map(|a| a.offset), Some(500));
    assert_eq!(link.master_offset(), Some(514), "keepalives and framing do not count; ping's 14 bytes do");
    assert_eq!(link.stream.lag(), Some(14));
    assert_eq!(link.replica_endpoint().as_deref(), Some("10.0.0.7:6390"));
}

#[test]
fn an_eof_mark_split_anywhere_across_reads_is_found() {
    let payload = rdb(30, Crc::Real);
    let mut wire = format!("$EOF:{MARK}\r\n").into_bytes();
    wire.extend_from_slice(&payload);
    wire.extend_from_slice(MARK.as_bytes());
    let mark_start = wire.len() - 40;
    for cut in mark_start - 2..=wire.len() {
        let mut link = FedLink::new(None, ms(0));
        feed(&mut link, 0, &handshake());
        link.on_bytes(M2R, &fullresync(0), ms(10));
        link.on_bytes(M2R, &wire[..cut], ms(11));
        let expected = if cut < wire.len() { Phase::RdbTransfer } else { Phase::Loading };
        assert_eq!(link.phase(), expected, "cut {cut}");
        assert!(link.rdb.as_ref().is_some_and(|r| r.transferred <= payload.len() as u64));
        link.on_bytes(M2R, &wire[cut..], ms(12));
        let rdb = link.rdb.as_ref().expect("rdb");
        assert_eq!(rdb.framing, PayloadFraming::EofMark);
        assert!(matches!(rdb.trailer, Some(TrailerCheck::Ok { .. })), "cut {cut}: {:?}", rdb.trailer);
        assert_eq!((rdb.transferred, rdb.size()), (payload.len() as u64, Some(payload.len() as u64)), "cut {cut}");
        assert_eq!(link.phase(), Phase::Loading, "cut {cut}");
        // Diskless: the master waits for the first ACK, then streams.
        link.on_bytes(R2M, &resp(&["REPLCONF", "ACK", "0"]), ms(13));
        let events = link.on_bytes(M2R, &resp(&["SELECT", "0"]), ms(14)).to_vec();
        assert!(matches!(
            &events[..],
            [WireEvent { event: Event::Stream(t), .. }] if t.commands == 1 && t.last == Some(CommandName::Select)
        ));
        assert_eq!(link.phase(), Phase::Streaming);
        assert_eq!(link.master_offset(), Some(23));
    }
}

fn full_sync_with(payload: &[u8]) -> FedLink {
    let mut link = FedLink::new(None, ms(0));
    feed(&mut link, 0, &handshake());
    link.on_bytes(M2R, &fullresync(0), ms(10));
    link.on_bytes(M2R, &[format!("${}\r\n", payload.len()).as_bytes(), payload].concat(), ms(11));
    link
}

#[test]
fn a_zero_trailer_is_not_computed_and_a_wrong_one_is_a_mismatch() {
    let link = full_sync_with(&rdb(10, Crc::Zero));
    assert_eq!(link.rdb.as_ref().and_then(|r| r.trailer), Some(TrailerCheck::NotComputed));

    let bad = rdb(10, Crc::Wrong);
    let good = rdb(10, Crc::Real);
    let link = full_sync_with(&bad);
    let expected_trailer = u64::from_le_bytes(bad[bad.len() - 8..].try_into().expect("8 bytes"));
    let real = u64::from_le_bytes(good[good.len() - 8..].try_into().expect("8 bytes"));
    assert_eq!(
        link.rdb.as_ref().and_then(|r| r.trailer),
        Some(TrailerCheck::Mismatch { expected: expected_trailer, computed: real })
    );
    assert_eq!(link.phase(), Phase::Loading, "a mismatch is reported, never a desync");
    assert!(link.desyncs.is_empty());
}

#[test]
fn a_payload_cut_midway_leaves_the_link_in_rdb_transfer_with_its_progress() {
    let payload = rdb(200, Crc::Real);
    let mut link = FedLink::new(None, ms(0));
    feed(&mut link, 0, &handshake());
    link.on_bytes(M2R, &fullresync(0), ms(10));
    link.on_bytes(M2R, format!("${}\r\n", payload.len()).as_bytes(), ms(20));
    link.on_bytes(M2R, &payload[..1000], ms(30));
    link.on_transport(
        TransportEvent::WriteBlocked { side: replscope::link::Side::Replica, duration: Duration::from_millis(7) },
        ms(35),
    );
    link.on_transport(TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Reset }, ms(40));
    let rdb = link.rdb.as_ref().expect("rdb");
    assert_eq!(
        (rdb.transferred, rdb.announced_size, rdb.trailer, rdb.completed_at),
        (1000, Some(payload.len() as u64), None, None)
    );
    let close = link.close.expect("closed");
    assert_eq!(
        (close.by, close.how, close.phase, close.time_in_phase),
        (ClosedBy::Master, CloseHow::Reset, Phase::RdbTransfer, Duration::from_millis(20))
    );
    assert_eq!(phases(&link).last(), Some(&Phase::Closed));
    assert_eq!(link.blocked[replscope::link::Side::Replica.index()], Duration::from_millis(7));
}

#[test]
fn an_error_line_instead_of_a_payload_is_recorded_beside_the_granted_sync() {
    let mut link = FedLink::new(None, ms(0));
    feed(&mut link, 0, &handshake());
    feed(
        &mut link,
        10,
        &[(M2R, fullresync(42)), (M2R, b"\n-ERR BGSAVE failed, replication can't continue\r\n".to_vec())],
    );
    assert!(matches!(link.answer, Some(SyncAnswer::FullResync { offset: 42, .. })));
    assert_eq!(link.payload_error.as_ref().map(|e| (&e.code, e.at)), Some((&ErrorCode::Err, ms(11))));
    assert!(link.rdb.is_none());
    assert_eq!(link.phase(), Phase::WaitingBgsave);
    assert!(link.desyncs.is_empty());
}

#[test]
fn the_sync_fallback_after_noauth_is_told_as_it_happened() {
    // PROTOCOL.md §2.4: a replica without masterauth against a master with requirepass.
    let noauth = b"-NOAUTH Authentication required.\r\n".to_vec();
    let mut link = FedLink::new(None, ms(0));
    let steps = vec![
        (R2M, resp(&["PING"])),
        (M2R, noauth.clone()),
        (
            R2M,
            [resp(&["REPLCONF", "listening-port", "6390"]), resp(&["REPLCONF", "capa", "eof", "capa", "psync2"])]
                .concat(),
        ),
        (M2R, [noauth.clone(), noauth.clone()].concat()),
        (R2M, resp(&["PSYNC", "?", "-1"])),
        (M2R, noauth.clone()),
        (R2M, b"SYNC\r\n".to_vec()),
        (M2R, noauth),
    ];
    feed(&mut link, 0, &steps);
    link.on_transport(TransportEvent::Closed { by: ClosedBy::Replica, how: CloseHow::Fin }, ms(9));
    assert_eq!(link.kind, LinkKind::Replication);
    assert_eq!(link.handshake.errors.iter().filter(|e| e.code == ErrorCode::Noauth).count(), 5);
    let answered: Vec<_> = link.handshake.errors.iter().map(|e| e.to).collect();
    use replscope::link::HandshakeStep as S;
    assert_eq!(answered, [Some(S::Ping), Some(S::Replconf), Some(S::Replconf), Some(S::Psync), Some(S::Sync)]);
    assert!(matches!(link.request, Some(SyncRequest::Sync { at }) if at == ms(6)));
    assert!(matches!(link.answer, Some(SyncAnswer::Error { code: ErrorCode::Noauth, at }) if at == ms(7)));
    assert_eq!(phases(&link), [Phase::Handshake, Phase::Closed]);
    assert!(link.desyncs.is_empty());
}

#[test]
fn a_sync_fallback_that_works_reaches_streaming_without_any_ack() {
    let payload = rdb(5, Crc::Real);
    let mut link = FedLink::new(None, ms(0));
    let mut steps = handshake();
    steps.push((M2R, b"-ERR unknown command 'PSYNC'\r\n".to_vec()));
    steps.push((R2M, b"SYNC\r\n".to_vec()));
    steps.push((M2R, [format!("${}\r\n", payload.len()).into_bytes(), payload].concat()));
    steps.push((M2R, b"\n".to_vec()));
    steps.push((M2R, resp(&["SET", "a", "1"])));
    feed(&mut link, 0, &steps);
    assert!(matches!(link.answer, Some(SyncAnswer::BulkPayload { .. })));
    assert_eq!(link.sync_kind, Some(SyncKind::Full));
    assert_eq!(phases(&link), [Phase::Handshake, Phase::RdbTransfer, Phase::Loading, Phase::Streaming]);
    assert_eq!(link.phase_at(Phase::Streaming), Some(ms(9)), "on the first stream command after the payload");
    assert_eq!(link.stream.acks, 0);
    assert_eq!(link.master_offset(), None, "a pre-PSYNC stream has no known offset");
    assert_eq!(link.stream.bytes, 27);
}

#[test]
fn garbage_in_each_phase_gives_one_desync_and_bytes_still_count() {
    // Replica side, during the handshake.
    let mut link = FedLink::new(None, ms(0));
    let ev = feed(&mut link, 0, &[(R2M, resp(&["PING"])), (R2M, b"*2\r\n$x\r\n".to_vec()), (R2M, resp(&["PING"]))]);
    assert_eq!(desyncs(&ev), [(R2M, 14, WirePhase::Handshake)]);
    assert_eq!(link.traffic[R2M.index()].bytes, 14 + 8 + 14);
    assert!(link.is_opaque(R2M) && !link.is_opaque(M2R));

    // Master side, during the handshake.
    let mut link = FedLink::new(None, ms(0));
    let ev = feed(&mut link, 0, &[(R2M, resp(&["PING"])), (M2R, b"+PONG\r\n:1\r\n+OK\r\n".to_vec())]);
    assert_eq!(desyncs(&ev), [(M2R, 7, WirePhase::Handshake)]);

    // Master side, after FULLRESYNC, where the payload preamble belongs.
    let mut link = FedLink::new(None, ms(0));
    feed(&mut link, 0, &handshake());
    let ev = feed(&mut link, 10, &[(M2R, fullresync(0)), (M2R, b"#junk\r\n".to_vec())]);
    assert_eq!(
        desyncs(&ev),
        [(M2R, b"+PONG\r\n+OK\r\n+OK\r\n".len() as u64 + fullresync(0).len() as u64, WirePhase::AwaitingPayload)]
    );

    // Inside the payload nothing is garbage: random bytes are a payload whose trailer does not check.
    let mut noise: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    noise[..9].copy_from_slice(b"REDIS0011");
    let link = full_sync_with(&noise);
    assert!(matches!(
        link.rdb.as_ref().and_then(|r| r.trailer),
        Some(TrailerCheck::Mismatch { .. } | TrailerCheck::NoTrailer)
    ));
    assert!(link.desyncs.is_empty());

    // The stream: a desync at the start of the bad command, then silence from that direction while the
    // replica side goes on being understood.
    let mut link = full_sync_with(&rdb(3, Crc::Real));
    let before = link.traffic[M2R.index()].bytes;
    let ev = feed(
        &mut link,
        20,
        &[
            (M2R, [resp(&["SET", "k", "v"]), b"hello\r\n".to_vec()].concat()),
            (M2R, resp(&["SET", "k", "v"])),
            (R2M, resp(&["REPLCONF", "ACK", "27"])),
        ],
    );
    assert_eq!(desyncs(&ev), [(M2R, before + 27, WirePhase::Stream)]);
    assert_eq!(link.desyncs[0].link_phase, Phase::Loading, "no ACK yet: the replica was still loading");
    assert_eq!(link.master_offset(), Some(27), "the offset stops at the last command understood");
    assert_eq!(link.stream.last_ack.map(|a| a.offset), Some(27));
    assert_eq!(link.phase(), Phase::Streaming);
    assert_eq!(link.traffic[M2R.index()].bytes, before + 27 + 7 + 27);
    assert_eq!(link.desyncs.len(), 1);
    assert!(matches!(link.desyncs[0].reason, DesyncReason::UnexpectedByte { byte: b'h', .. }));
}

#[test]
fn absurd_payload_lengths_are_desyncs() {
    for line in ["$99999999999999999999\r\n", "$-5\r\n", "$12abc\r\n", "$\r\n", "$281474976710657\r\n"] {
        let mut link = FedLink::new(None, ms(0));
        feed(&mut link, 0, &handshake());
        let ev = feed(&mut link, 10, &[(M2R, fullresync(0)), (M2R, line.as_bytes().to_vec())]);
        assert_eq!(desyncs(&ev).len(), 1, "{line:?}");
        assert!(link.rdb.is_none(), "{line:?}");
        assert!(matches!(link.desyncs[0].reason, DesyncReason::BadLength { what: "payload" }), "{line:?}");
    }
    // A line that never ends is capped, not buffered forever.
    let mut link = FedLink::new(None, ms(0));
    let ev = feed(&mut link, 0, &[(M2R, vec![b'+'; 100_000])]);
    assert!(matches!(ev.last().map(|e| &e.event), Some(Event::Desync { reason: DesyncReason::TooLong { .. }, .. })));
}

#[test]
fn a_plain_client_is_forwarded_uninterpreted_and_its_secrets_are_kept_out() {
    let mut link = FedLink::new(None, ms(0));
    let ev = feed(
        &mut link,
        0,
        &[
            (R2M, resp(&["AUTH", "app-user", "hunter2-secret"])),
            (M2R, b"+OK\r\n".to_vec()),
            (R2M, resp(&["GET", "k"])),
            (M2R, b"$5\r\nhello\r\n".to_vec()),
            (R2M, resp(&["HELLO", "3", "AUTH", "app-user", "hunter2-secret"])),
        ],
    );
    assert_eq!(link.kind, LinkKind::Client);
    assert_eq!(
        link.handshake.auth.as_ref().map(|a| (a.user.as_deref(), a.accepted)),
        Some((Some("app-user"), Some(true)))
    );
    assert!(link.rdb.is_none(), "a bulk reply is not an RDB");
    assert!(ev.iter().any(|e| e.event == Event::PlainClient { first_command: "GET".into() }));
    assert_eq!(ev.len(), 3, "AUTH, +OK, then the verdict: nothing more is interpreted: {ev:?}");
    assert_eq!(link.traffic[M2R.index()].bytes, 5 + 11);
    for text in [format!("{link:?}"), serde_json::to_string(&*link).expect("json"), format!("{ev:?}")] {
        assert!(!text.contains("hunter2"), "password leaked: {text}");
    }
}

#[test]
fn a_compressed_payload_is_reported_and_the_link_goes_on() {
    let mut envelope = b"VCS\x01\x02\x00\x01".to_vec();
    envelope.extend((0..3000u32).map(|i| (i * 7) as u8));
    let mut link = full_sync_with(&envelope);
    link.on_bytes(M2R, &resp(&["SELECT", "0"]), ms(50));
    let rdb = link.rdb.as_ref().expect("rdb facts");
    assert_eq!(rdb.not_rdb.as_deref(), Some("564353010200010007"), "the first 9 bytes, hex");
    assert_eq!(rdb.trailer, Some(TrailerCheck::NotRdb));
    assert!(rdb.header.is_none());
    assert_eq!(link.master_offset(), Some(23));
    assert!(link.desyncs.is_empty());
}

/// Redis 8's rdb channel (PROTOCOL.md §4.2; no recording exists): the main channel gets
/// `+RDBCHANNELSYNC <id>` and the stream at once, the RDB channel names that id and gets the RDB.
#[test]
fn a_redis8_rdb_channel_sync_is_joined_into_one_story() {
    let mut links = Fed::new();
    let main = links.open(Some([127, 0, 0, 1].into()), ms(0));
    let rdbc = links.open(Some([127, 0, 0, 1].into()), ms(5));
    let payload = rdb(40, Crc::Real);
    let mut step = 0;
    let mut on = |links: &mut Fed, id: LinkId, dir: Direction, bytes: Vec<u8>| {
        step += 1;
        links.on_bytes(id, dir, &bytes, ms(step)).to_vec()
    };
    for (d, b) in handshake() {
        on(&mut links, main, d, b);
    }
    on(&mut links, main, M2R, b"+RDBCHANNELSYNC 17\r\n".to_vec());
    on(
        &mut links,
        rdbc,
        R2M,
        resp(&[
            "REPLCONF",
            "capa",
            "eof",
            "rdb-only",
            "1",
            "rdb-channel",
            "1",
            "main-ch-client-id",
            "17",
            "listening-port",
            "6390",
        ]),
    );
    on(&mut links, rdbc, M2R, b"+OK\r\n".to_vec());
    on(&mut links, rdbc, R2M, resp(&["PSYNC", "?", "-1"]));
    on(&mut links, rdbc, M2R, [b"\n".to_vec(), fullresync(1000), format!("$EOF:{MARK}\r\n").into_bytes()].concat());
    // The stream reaches the main channel while the RDB is still on its way.
    on(&mut links, main, M2R, [resp(&["SELECT", "0"]), resp(&["SET", "a", "1"])].concat());
    assert_eq!(links.get(main).map(Link::phase), Some(Phase::RdbTransfer));
    on(&mut links, rdbc, M2R, [payload.clone(), MARK.as_bytes().to_vec()].concat());
    on(&mut links, main, R2M, b"\n".to_vec());
    on(&mut links, main, R2M, resp(&["REPLCONF", "ACK", "1050"]));
    let (m, r) = (links.get(main).expect("main"), links.get(rdbc).expect("rdb channel"));
    assert_eq!((m.kind, r.kind), (LinkKind::Replication, LinkKind::RdbChannel));
    assert_eq!((m.partner, r.partner), (Some(rdbc), Some(main)));
    assert_eq!(
        phases(m),
        [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading, Phase::Streaming]
    );
    assert_eq!(phases(r), [Phase::Handshake, Phase::WaitingBgsave, Phase::RdbTransfer, Phase::Loading]);
    assert_eq!(m.phase_at(Phase::Loading), r.phase_at(Phase::Loading));
    assert_eq!(m.stream.start_offset, Some(1000));
    assert_eq!(m.master_offset(), Some(1050), "SELECT (23) + SET (27) after the rdb channel's FULLRESYNC 1000");
    assert_eq!(m.stream.lag(), Some(0));
    let rdb_facts = m.rdb.as_ref().expect("the main channel shows the RDB");
    assert_eq!((rdb_facts.transferred, rdb_facts.via_rdb_channel), (payload.len() as u64, Some(rdbc.0)));
    assert!(matches!(rdb_facts.trailer, Some(TrailerCheck::Ok { .. })));
    assert_eq!(r.replica_endpoint(), m.replica_endpoint());
}

#[test]
fn auth_with_a_user_keeps_the_user_and_never_the_password() {
    let mut link = FedLink::new(None, ms(0));
    let ev = feed(
        &mut link,
        0,
        &[
            (R2M, resp(&["PING"])),
            (M2R, b"-NOAUTH Authentication required.\r\n".to_vec()),
            (R2M, resp(&["AUTH", "replicator", "pa55-w0rd-xyz"])),
            (M2R, b"-WRONGPASS invalid username-password pair or user is disabled.\r\n".to_vec()),
        ],
    );
    link.on_transport(TransportEvent::Closed { by: ClosedBy::Replica, how: CloseHow::Reset }, ms(10));
    assert_eq!(link.handshake.auth.as_ref().and_then(|a| a.user.as_deref()), Some("replicator"));
    assert_eq!(link.handshake.auth.as_ref().and_then(|a| a.accepted), Some(false), "WRONGPASS refused it");
    assert_eq!(link.handshake.errors.last().and_then(|e| e.to), Some(replscope::link::HandshakeStep::Auth));
    assert_eq!(
        link.handshake.errors.iter().map(|e| e.code.clone()).collect::<Vec<_>>(),
        [ErrorCode::Noauth, ErrorCode::Wrongpass]
    );
    for text in [format!("{link:?}"), serde_json::to_string(&*link).expect("json"), format!("{ev:?}")] {
        assert!(!text.contains("pa55") && !text.contains("70613535"), "password leaked: {text}");
    }
}

#[test]
fn the_rdb_rate_is_over_the_last_second_then_the_average() {
    let payload = rdb(10_000, Crc::Real);
    assert!(payload.len() > 20 * 10_000 + 5 * 40_000, "payload of {} bytes too small for the test", payload.len());
    let mut link = FedLink::new(None, ms(0));
    feed(&mut link, 0, &handshake());
    link.on_bytes(M2R, &fullresync(0), ms(10));
    link.on_bytes(M2R, format!("${}\r\n", payload.len()).as_bytes(), ms(1000));
    assert_eq!(link.rdb_rate(ms(1000)), None, "nothing to time yet");
    // 10 KB per 100 ms for 2 s, then 40 KB per 100 ms: the rate follows the last second.
    let mut sent = 0;
    let mut t = 1000;
    for step in 0..25 {
        let n = if step < 20 { 10_000 } else { 40_000 };
        t += 100;
        link.on_bytes(M2R, &payload[sent..sent + n], ms(t));
        sent += n;
        if step == 19 {
            let r = link.rdb_rate(ms(t)).expect("rate");
            assert!((r - 100_000.0).abs() < 1.0, "after 2 s at 100 kB/s: {r}");
        }
    }
    let r = link.rdb_rate(ms(t)).expect("rate");
    assert!((r - 250_000.0).abs() < 1.0, "last second: 5 × 10 kB then 5 × 40 kB: {r}");
    link.on_bytes(M2R, &payload[sent..], ms(t + 100));
    t += 100;
    let avg = link.rdb_rate(ms(t + 5000)).expect("average");
    let expected = payload.len() as f64 / ((t - 1000) as f64 / 1000.0);
    assert!((avg - expected).abs() < 1.0, "{avg} vs {expected}");
}

#[test]
fn a_cut_transfer_keeps_the_rate_it_had_at_the_close() {
    let payload = rdb(10_000, Crc::Real);
    let mut link = FedLink::new(None, ms(0));
    feed(&mut link, 0, &handshake());
    link.on_bytes(M2R, &fullresync(0), ms(10));
    link.on_bytes(M2R, format!("${}\r\n", payload.len()).as_bytes(), ms(1000));
    for step in 0..20 {
        link.on_bytes(M2R, &payload[step * 10_000..(step + 1) * 10_000], ms(1100 + step as u64 * 100));
    }
    link.on_transport(TransportEvent::Closed { by: ClosedBy::Master, how: CloseHow::Fin }, ms(3000));
    let at_close = link.rdb_rate(ms(3000)).expect("rate");
    assert!((at_close - 100_000.0).abs() < 1.0, "10 kB per 100 ms: {at_close}");
    assert_eq!(link.rdb_rate(ms(60_000)), Some(at_close), "a closed link's rate does not decay");
}
