//! The JSON shape of `/api/links`: each link's whole story with its id, route, replica and peer.

use crate::link::{Link, LinkId};
use crate::time::Timestamp;

/// One link as the API shows it.
#[derive(serde::Serialize)]
pub struct LinkView<'a> {
    /// The link's id (unique within this proxy).
    pub id: LinkId,
    /// The route (the configured name of the master).
    pub route: &'a str,
    /// The replica endpoint (`ip:listening-port`), once announced.
    pub replica: Option<String>,
    /// The peer address the connection came from.
    pub peer: Option<String>,
    /// Whether it is still open.
    pub open: bool,
    /// Seconds since the connection was accepted (open links) or its lifetime (closed ones).
    pub age_seconds: f64,
    /// The master's offset minus the replica's last ACK.
    pub lag_bytes: Option<i64>,
    /// Seconds since the last ACK.
    pub ack_age_seconds: Option<f64>,
    /// The RDB transfer rate (last second while it flows, the average after).
    pub rdb_rate_bytes_per_second: Option<f64>,
    /// The master's replication offset as the wire showed it.
    pub master_offset: Option<i64>,
    /// Why it ended, in plain words with a suggestion, once diagnosed.
    pub explanation: Option<String>,
    /// Why its partial resync was refused, in plain words, when it was.
    pub refusal_explanation: Option<String>,
    /// Everything else the link knows.
    #[serde(flatten)]
    pub link: &'a Link,
}

impl<'a> LinkView<'a> {
    /// The view of `link` at `now`.
    pub fn new(
        id: LinkId,
        route: &'a str,
        peer: Option<String>,
        link: &'a Link,
        now: Timestamp,
        explanation: Option<String>,
    ) -> Self {
        let end = link.close.as_ref().map_or(now, |c| c.at);
        LinkView {
            id,
            route,
            replica: link.replica_endpoint(),
            peer,
            open: link.close.is_none(),
            age_seconds: end.since(link.opened_at).as_secs_f64(),
            lag_bytes: link.stream.lag(),
            ack_age_seconds: link.stream.last_ack.map(|a| now.since(a.at).as_secs_f64()),
            rdb_rate_bytes_per_second: link.rdb_rate(now),
            master_offset: link.master_offset(),
            explanation,
            refusal_explanation: link.psync_refusal.as_ref().map(crate::observe::explain::refusal),
            link,
        }
    }
}
