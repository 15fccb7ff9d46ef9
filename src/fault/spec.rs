//! What an operator asks for: a fault's kind, direction, target, trigger, scope and expiry, in human
//! units (`4MiB/s`, `250ms`, `30s`, `50%`), from the HTTP API's JSON or the command line's words.

use std::time::Duration;

use crate::link::{CloseHow, FaultType, Phase};
use crate::size::parse_size;
use crate::wire::Direction;

/// Why a fault request is refused: one clear sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(msg.into()))
}

/// Which way a fault acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultDirection {
    /// Bytes from the master to the replica.
    MasterToReplica,
    /// Bytes from the replica to the master.
    ReplicaToMaster,
    /// Both.
    Both,
}

impl FaultDirection {
    /// Whether bytes going `d` are affected.
    pub fn covers(self, d: Direction) -> bool {
        match self {
            FaultDirection::Both => true,
            FaultDirection::MasterToReplica => d == Direction::MasterToReplica,
            FaultDirection::ReplicaToMaster => d == Direction::ReplicaToMaster,
        }
    }

    /// `master-to-replica`, `master_to_replica`, `replica-to-master`, `both`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        match s.replace('-', "_").to_ascii_lowercase().as_str() {
            "master_to_replica" | "m2r" => Ok(FaultDirection::MasterToReplica),
            "replica_to_master" | "r2m" => Ok(FaultDirection::ReplicaToMaster),
            "both" => Ok(FaultDirection::Both),
            _ => err(format!("direction {s:?}: expected master-to-replica, replica-to-master or both")),
        }
    }
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// Caps bytes per second (token bucket).
    Bandwidth {
        /// Bytes per second.
        rate_bytes_per_second: u64,
    },
    /// Holds every chunk back by `delay ± jitter`, order preserved.
    Latency {
        /// The delay.
        #[serde(serialize_with = "secs")]
        delay: Duration,
        /// Up to this much more or less.
        #[serde(serialize_with = "secs")]
        jitter: Duration,
    },
    /// Stops reading and forwarding for a time; the sockets stay open.
    Stall {
        /// How long.
        #[serde(serialize_with = "secs")]
        duration: Duration,
    },
    /// Closes both sides.
    Cut {
        /// With a FIN or a reset.
        #[serde(serialize_with = "ser_how")]
        how: CloseHow,
    },
    /// Closes both sides after this many more bytes.
    Limit {
        /// The bytes still forwarded.
        bytes: u64,
    },
}

impl FaultKind {
    /// Its type (the label metrics, logs and a link's story use).
    pub fn fault_type(&self) -> FaultType {
        match self {
            FaultKind::Bandwidth { .. } => FaultType::Bandwidth,
            FaultKind::Latency { .. } => FaultType::Latency,
            FaultKind::Stall { .. } => FaultType::Stall,
            FaultKind::Cut { .. } => FaultType::Cut,
            FaultKind::Limit { .. } => FaultType::Limit,
        }
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_how<S: serde::Serializer>(h: &CloseHow, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *h == CloseHow::Reset { "reset" } else { "fin" })
}

/// When a fault starts acting on a link.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "when")]
pub enum Trigger {
    /// At once.
    Now,
    /// When the link is in this phase (entering it, or already in it).
    Phase {
        /// The phase.
        phase: Phase,
    },
    /// Once the link has been in this phase for this long.
    InPhaseFor {
        /// The phase.
        phase: Phase,
        /// How long.
        #[serde(serialize_with = "secs")]
        after: Duration,
    },
    /// Once this many RDB bytes were forwarded in the current transfer.
    RdbBytes {
        /// Bytes.
        bytes: u64,
    },
    /// Once this share of the RDB was forwarded (needs a `$<len>` size; an EOF-marked RDB's size is
    /// unknown until its end, so this never fires on one).
    RdbPercent {
        /// Percent, 0–100.
        percent: f64,
    },
}

/// Which links a fault may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every matching link, open now or opened later, until the fault is removed or expires.
    All,
    /// Only the links open when the fault was created.
    OpenNow,
}

/// A fault as asked for.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FaultSpec {
    /// What it does.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Which way.
    pub direction: FaultDirection,
    /// Only this route (`None`: every route).
    pub route: Option<String>,
    /// Only this replica endpoint (`ip:port` as the replica announces it).
    pub replica: Option<String>,
    /// When it starts acting on a link.
    pub trigger: Trigger,
    /// Which links.
    pub scope: Scope,
    /// Removed after this long.
    #[serde(serialize_with = "opt_secs")]
    pub expires_after: Option<Duration>,
    /// Stops firing on new links after firing this many times.
    pub times: Option<u64>,
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// A number, or a string with a unit.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Human {
    /// A bare number (bytes, bytes/s, seconds, percent, as the field says).
    Number(f64),
    /// Text with a unit.
    Text(String),
}

/// The JSON body of `POST /api/faults`, and what `replscope fault add` and `--fault` build.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// `bandwidth`, `latency`, `stall`, `cut` or `limit`.
    pub kind: String,
    /// `master-to-replica`, `replica-to-master` or `both` (default both).
    pub direction: Option<String>,
    /// Bandwidth: `4MiB/s` (or bytes per second).
    pub rate: Option<Human>,
    /// Latency: `250ms` (or seconds).
    pub delay: Option<Human>,
    /// Latency: `20ms` (or seconds); default 0.
    pub jitter: Option<Human>,
    /// Stall: `5s` (or seconds).
    pub duration: Option<Human>,
    /// Cut: `fin` (default) or `reset`.
    pub how: Option<String>,
    /// Limit: `1MiB` (or bytes).
    pub bytes: Option<Human>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this replica endpoint.
    pub replica: Option<String>,
    /// `now` (default), `phase=P`, `phase=P+D`, `rdb-bytes=N`, `rdb-percent=P`.
    pub when: Option<String>,
    /// `all` (default) or `open` (only the links open now).
    pub scope: Option<String>,
    /// Expire after this long: `60s`.
    #[serde(rename = "for")]
    pub for_: Option<Human>,
    /// Stop firing after this many times.
    pub times: Option<u64>,
}

/// Parses `250ms`, `30s`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let Ok(v) = num.parse::<f64>() else { return err(format!("{s:?} is not a duration (examples: 250ms, 30s, 2m)")) };
    let secs = match unit.trim() {
        "" | "s" | "sec" => v,
        "ms" => v / 1000.0,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return err(format!("{s:?} is not a duration (examples: 250ms, 30s, 2m)")),
    };
    if !secs.is_finite() || !(0.0..=365.0 * 86400.0).contains(&secs) {
        return err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `4MiB/s`, `10MB/s`, `512KiB`, or bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, SpecError> {
    let t = s.trim();
    let t = t.strip_suffix("/s").or_else(|| t.strip_suffix("ps")).unwrap_or(t);
    match parse_size(t) {
        Ok(0) | Err(_) => err(format!("{s:?} is not a rate (examples: 4MiB/s, 512KiB/s, 1000000)")),
        Ok(n) => Ok(n),
    }
}

/// Parses `50%` or `50` (0–100).
pub fn parse_percent(s: &str) -> Result<f64, SpecError> {
    let t = s.trim().trim_end_matches('%');
    match t.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => err(format!("{s:?} is not a percentage between 0 and 100")),
    }
}

/// Parses a phase name (`loading`, `rdb_transfer`, `rdb-transfer` …).
pub fn parse_phase(s: &str) -> Result<Phase, SpecError> {
    let want = s.trim().replace('-', "_").to_ascii_lowercase();
    Phase::ALL.into_iter().find(|p| p.as_str() == want).map_or_else(
        || err(format!("{s:?} is not a phase (handshake, waiting_bgsave, rdb_transfer, loading, streaming)")),
        Ok,
    )
}

/// Parses a trigger: `now`, `phase=P`, `phase=P+D`, `rdb-bytes=N`, `rdb-percent=P`.
pub fn parse_trigger(s: &str) -> Result<Trigger, SpecError> {
    let t = s.trim();
    if t.is_empty() || t == "now" {
        return Ok(Trigger::Now);
    }
    let Some((key, value)) = t.split_once('=') else {
        return err(format!("when {s:?}: expected now, phase=P, phase=P+30s, rdb-bytes=N or rdb-percent=P"));
    };
    match key.replace('_', "-").as_str() {
        "phase" => match value.split_once('+') {
            Some((p, d)) => Ok(Trigger::InPhaseFor { phase: parse_phase(p)?, after: parse_duration(d)? }),
            None => Ok(Trigger::Phase { phase: parse_phase(value)? }),
        },
        "rdb-bytes" => match parse_size(value) {
            Ok(bytes) => Ok(Trigger::RdbBytes { bytes }),
            Err(e) => err(e.to_string()),
        },
        "rdb-percent" => Ok(Trigger::RdbPercent { percent: parse_percent(value)? }),
        _ => err(format!("when {s:?}: expected now, phase=P, phase=P+30s, rdb-bytes=N or rdb-percent=P")),
    }
}

fn text(h: &Human) -> String {
    match h {
        Human::Number(n) => n.to_string(),
        Human::Text(t) => t.clone(),
    }
}

impl FaultRequest {
    /// Checks the request and turns it into a spec.
    pub fn into_spec(self) -> Result<FaultSpec, SpecError> {
        let need = |field: &Option<Human>, name: &str, kind: &str| -> Result<String, SpecError> {
            field.as_ref().map(text).ok_or_else(|| SpecError(format!("{kind} needs {name}")))
        };
        let Some(fault_type) = FaultType::from_label(&self.kind.to_ascii_lowercase()) else {
            let known: Vec<&str> = FaultType::ALL.iter().map(|t| t.as_str()).collect();
            return err(format!("kind {:?}: expected one of {}", self.kind, known.join(", ")));
        };
        let kind = match fault_type {
            FaultType::Bandwidth => FaultKind::Bandwidth {
                rate_bytes_per_second: parse_rate(&need(&self.rate, "rate (e.g. 4MiB/s)", "bandwidth")?)?,
            },
            FaultType::Latency => FaultKind::Latency {
                delay: parse_duration(&need(&self.delay, "delay (e.g. 250ms)", "latency")?)?,
                jitter: self.jitter.as_ref().map(|j| parse_duration(&text(j))).transpose()?.unwrap_or_default(),
            },
            FaultType::Stall => {
                FaultKind::Stall { duration: parse_duration(&need(&self.duration, "duration (e.g. 5s)", "stall")?)? }
            }
            FaultType::Cut => FaultKind::Cut {
                how: match self.how.as_deref().unwrap_or("fin").to_ascii_lowercase().as_str() {
                    "fin" => CloseHow::Fin,
                    "reset" | "rst" => CloseHow::Reset,
                    other => return err(format!("how {other:?}: expected fin or reset")),
                },
            },
            FaultType::Limit => FaultKind::Limit {
                bytes: parse_size(&need(&self.bytes, "bytes (e.g. 1MiB)", "limit")?)
                    .map_err(|e| SpecError(e.to_string()))?,
            },
        };
        let misplaced = [
            ("rate", self.rate.is_some(), FaultType::Bandwidth),
            ("delay", self.delay.is_some(), FaultType::Latency),
            ("jitter", self.jitter.is_some(), FaultType::Latency),
            ("duration", self.duration.is_some(), FaultType::Stall),
            ("how", self.how.is_some(), FaultType::Cut),
            ("bytes", self.bytes.is_some(), FaultType::Limit),
        ];
        for (field, given, belongs) in misplaced {
            if given && fault_type != belongs {
                return err(format!("{field} is for {belongs} faults, not {fault_type}"));
            }
        }
        let direction = FaultDirection::parse(self.direction.as_deref().unwrap_or("both"))?;
        let scope = match self.scope.as_deref().unwrap_or("all") {
            "all" => Scope::All,
            "open" | "open-now" | "open_now" => Scope::OpenNow,
            other => return err(format!("scope {other:?}: expected all or open")),
        };
        Ok(FaultSpec {
            kind,
            direction,
            route: self.route.filter(|r| !r.is_empty()),
            replica: self.replica.filter(|r| !r.is_empty()),
            trigger: parse_trigger(self.when.as_deref().unwrap_or("now"))?,
            scope,
            expires_after: self.for_.as_ref().map(|d| parse_duration(&text(d))).transpose()?,
            times: match self.times {
                Some(0) => return err("times must be at least 1"),
                t => t,
            },
        })
    }

    /// Parses the words of `--fault SPEC`: a kind, then `key=value` pairs (`cut how=reset
    /// when=rdb-percent=50 times=1`).
    pub fn from_words(spec: &str) -> Result<FaultRequest, SpecError> {
        let mut words = spec.split_whitespace();
        let Some(kind) = words.next() else { return err("an empty fault spec") };
        let mut r = FaultRequest { kind: kind.to_string(), ..FaultRequest::default() };
        for w in words {
            let Some((k, v)) = w.split_once('=') else { return err(format!("{w:?}: expected key=value")) };
            let h = || Some(Human::Text(v.to_string()));
            match k {
                "direction" => r.direction = Some(v.into()),
                "rate" => r.rate = h(),
                "delay" => r.delay = h(),
                "jitter" => r.jitter = h(),
                "duration" => r.duration = h(),
                "how" => r.how = Some(v.into()),
                "bytes" => r.bytes = h(),
                "route" => r.route = Some(v.into()),
                "replica" => r.replica = Some(v.into()),
                "when" => r.when = Some(v.into()),
                "scope" => r.scope = Some(v.into()),
                "for" => r.for_ = h(),
                "times" => r.times = Some(v.parse().map_err(|_| SpecError(format!("times={v:?} is not a number")))?),
                other => return err(format!("{other:?} is not a fault setting")),
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_rate("4MiB/s"), Ok(4 << 20));
        assert_eq!(parse_percent("50%"), Ok(50.0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_percent("150%").is_err());
    }

    #[test]
    fn triggers() {
        assert_eq!(parse_trigger("now"), Ok(Trigger::Now));
        assert_eq!(parse_trigger("phase=loading"), Ok(Trigger::Phase { phase: Phase::Loading }));
        assert_eq!(
            parse_trigger("phase=rdb-transfer+20s"),
            Ok(Trigger::InPhaseFor { phase: Phase::RdbTransfer, after: Duration::from_secs(20) })
        );
        assert_eq!(parse_trigger("rdb-bytes=10MiB"), Ok(Trigger::RdbBytes { bytes: 10 << 20 }));
        assert_eq!(parse_trigger("rdb-percent=50"), Ok(Trigger::RdbPercent { percent: 50.0 }));
        assert!(parse_trigger("tomorrow").is_err());
        assert!(parse_trigger("phase=lunch").is_err());
    }

    #[test]
    fn words_become_a_spec_and_mistakes_are_named() {
        let spec =
            FaultRequest::from_words("cut how=reset when=rdb-percent=50 times=1").and_then(FaultRequest::into_spec);
        let spec = spec.expect("valid");
        assert_eq!(spec.kind, FaultKind::Cut { how: CloseHow::Reset });
        assert_eq!(
            (spec.trigger, spec.times, spec.direction),
            (Trigger::RdbPercent { percent: 50.0 }, Some(1), FaultDirection::Both)
        );
        for (words, want) in [
            ("bandwidth", "bandwidth needs rate"),
            ("teleport", "kind \"teleport\""),
            ("cut rate=4MiB/s", "rate is for bandwidth faults, not cut"),
            ("stall duration=5s direction=sideways", "direction \"sideways\""),
            ("limit bytes=1MiB color=red", "\"color\" is not a fault setting"),
        ] {
            let e = FaultRequest::from_words(words).and_then(FaultRequest::into_spec).expect_err(words);
            assert!(e.0.starts_with(want), "{words}: {e}");
        }
    }
}
