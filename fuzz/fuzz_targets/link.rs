//! The whole core on one link: both directions in the pieces the input cuts (read by the connection's
//! reader, taken by the link), then a close, diagnosis passes, and the link as the API shows it. Never
//! panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use replscope::link::{CloseHow, ClosedBy, Fed, TransportEvent};
use replscope::time::Timestamp;
use replscope_fuzz::pieces;

fuzz_target!(|data: &[u8]| {
    let mut links = Fed::new();
    let id = links.open(Some([127, 0, 0, 1].into()), Timestamp::ZERO);
    let mut now = Timestamp::ZERO;
    for p in pieces(data) {
        now = now.plus(Duration::from_millis(u64::from(p.bytes.first().copied().unwrap_or(0))));
        links.on_bytes(id, p.direction, p.bytes, now);
    }
    let by = if data.len() % 2 == 0 { ClosedBy::Master } else { ClosedBy::Replica };
    links.on_transport(id, TransportEvent::Closed { by, how: CloseHow::Fin }, now);
    links.diagnose_closed(id, now);
    links.diagnose(now.plus(Duration::from_secs(11)));
    let shown = serde_json::to_string(links.get(id).expect("the link"));
    assert!(shown.is_ok());
});
