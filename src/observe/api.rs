//! The JSON shape of `/api/links`: each link's whole story with its id, route, replica and peer, every
//! event time both as the core counts it (microseconds since the proxy started) and as wall-clock time.

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

/// Where the core's clock started on the wall clock: turns its timestamps into RFC 3339 times.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// The wall-clock time of [`Timestamp::ZERO`].
    pub epoch: std::time::SystemTime,
}

impl WallClock {
    /// `at` as an RFC 3339 time (UTC, microseconds).
    pub fn rfc3339(&self, at: Timestamp) -> String {
        let wall = self.epoch + std::time::Duration::from_micros(at.as_micros());
        humantime::format_rfc3339_micros(wall).to_string()
    }

    /// Gives every event time in `value` (a key `at`, or ending in `_at` or `_since`, holding the core's
    /// microseconds) a sibling with `_rfc3339` appended to its key.
    pub fn annotate(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let times: Vec<(String, String)> = map
                    .iter()
                    .filter(|(k, _)| *k == "at" || k.ends_with("_at") || k.ends_with("_since"))
                    .filter_map(|(k, v)| {
                        Some((format!("{k}_rfc3339"), self.rfc3339(Timestamp::from_micros(v.as_u64()?))))
                    })
                    .collect();
                for v in map.values_mut() {
                    self.annotate(v);
                }
                for (k, t) in times {
                    map.insert(k, serde_json::Value::String(t));
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.annotate(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_time_gets_its_wall_clock_twin() {
        let clock = WallClock { epoch: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_342_400) };
        let mut v = serde_json::json!({
            "opened_at": 1_500_000,
            "phases": [{"phase": "handshake", "at": 0}],
            "loop_since": null,
            "age_seconds": 3.0,
        });
        clock.annotate(&mut v);
        assert_eq!(v["opened_at_rfc3339"], "2026-12-04T00:00:01.500000Z");
        assert_eq!(v["phases"][0]["at_rfc3339"], "2026-12-04T00:00:00.000000Z");
        assert!(v.get("loop_since_rfc3339").is_none() && v.get("age_seconds_rfc3339").is_none());
        assert_eq!(v["opened_at"], 1_500_000, "the core's time stays");
    }
}
