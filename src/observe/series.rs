//! The series of one route's metrics, held here rather than in a global recorder so that the series of
//! a replica that is gone can be dropped with it, and rendered in the Prometheus text format (0.0.4).
//!
//! A family is declared once ([`Def`]: name, help, label names); its series are keyed by their label
//! values in the declared order. Counters only grow, gauges are set, histograms observe into the
//! duration buckets. Nothing here knows what the metrics mean.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Histogram buckets for durations, in seconds: a millisecond to four hours.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 7200.0, 14400.0,
];

/// A metric family's declaration: name, help text and label names.
#[derive(Clone, Copy, Debug)]
pub struct Def<const N: usize> {
    /// The name (base units in it: `_bytes`, `_seconds`, `_total`).
    pub name: &'static str,
    /// The help text.
    pub help: &'static str,
    /// The label names, in the order values are given.
    pub labels: [&'static str; N],
}

/// What a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// Only grows (until its series is dropped).
    Counter,
    /// Set to the value of the moment.
    Gauge,
    /// Observations counted into [`DURATION_BUCKETS`].
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

#[derive(Clone, Debug)]
enum Value {
    Number(f64),
    Histogram { buckets: Vec<u64>, sum: f64, count: u64 },
}

#[derive(Debug)]
struct Family {
    /// Shown (its `HELP` and `TYPE`) even with no series.
    declared: bool,
    help: &'static str,
    kind: Type,
    labels: Vec<&'static str>,
    series: BTreeMap<Vec<String>, Value>,
}

/// Every series of one route.
#[derive(Debug, Default)]
pub struct Series {
    families: BTreeMap<&'static str, Family>,
}

impl Series {
    /// No series.
    pub fn new() -> Self {
        Self::default()
    }

    fn family<const N: usize>(&mut self, def: &Def<N>, kind: Type) -> &mut Family {
        self.families.entry(def.name).or_insert_with(|| Family {
            declared: false,
            help: def.help,
            kind,
            labels: def.labels.to_vec(),
            series: BTreeMap::new(),
        })
    }

    fn slot<const N: usize>(&mut self, def: &Def<N>, kind: Type, values: [&str; N]) -> &mut Value {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let family = self.family(def, kind);
        family.series.entry(key).or_insert_with(|| match kind {
            Type::Histogram => Value::Histogram { buckets: vec![0; DURATION_BUCKETS.len()], sum: 0.0, count: 0 },
            _ => Value::Number(0.0),
        })
    }

    /// Declares a family, so it is shown (`HELP` and `TYPE`) before it has a series: a scraper, a rule
    /// or a dashboard can tell a metric with nothing to count yet from one that does not exist.
    pub fn declare<const N: usize>(&mut self, def: &Def<N>, kind: Type) {
        self.family(def, kind).declared = true;
    }

    /// Adds `n` to a counter.
    pub fn add<const N: usize>(&mut self, def: &Def<N>, values: [&str; N], n: f64) {
        if let Value::Number(v) = self.slot(def, Type::Counter, values) {
            *v += n;
        }
    }

    /// Sets a gauge.
    pub fn set<const N: usize>(&mut self, def: &Def<N>, values: [&str; N], n: f64) {
        if let Value::Number(v) = self.slot(def, Type::Gauge, values) {
            *v = n;
        }
    }

    /// Observes a value into a histogram.
    pub fn observe<const N: usize>(&mut self, def: &Def<N>, values: [&str; N], x: f64) {
        if let Value::Histogram { buckets, sum, count } = self.slot(def, Type::Histogram, values) {
            for (bound, n) in DURATION_BUCKETS.iter().zip(buckets.iter_mut()) {
                if x <= *bound {
                    *n += 1;
                }
            }
            *sum += x;
            *count += 1;
        }
    }

    /// Drops every gauge series (the gauges are computed afresh at each scrape).
    pub fn clear_gauges(&mut self) {
        for family in self.families.values_mut().filter(|f| f.kind == Type::Gauge) {
            family.series.clear();
        }
    }

    /// Drops every series whose label `name` has the value `value`; how many.
    pub fn drop_labelled(&mut self, name: &str, value: &str) -> usize {
        let mut dropped = 0;
        for family in self.families.values_mut() {
            let Some(i) = family.labels.iter().position(|l| *l == name) else { continue };
            let before = family.series.len();
            family.series.retain(|key, _| key.get(i).is_none_or(|v| v != value));
            dropped += before - family.series.len();
        }
        dropped
    }

    /// Whether any series has the label `name` with the value `value`.
    #[cfg(test)]
    pub fn has_labelled(&self, name: &str, value: &str) -> bool {
        self.families
            .values()
            .any(|f| f.labels.iter().position(|l| *l == name).is_some_and(|i| f.series.keys().any(|k| k[i] == value)))
    }

    /// Appends every family that has a series or was declared, in the text format.
    pub fn render(&self, out: &mut String) {
        let mut exposition = Exposition::new();
        exposition.add(self);
        exposition.render(out);
    }
}

/// The text of families gathered from several [`Series`] (the routes of one process): each family's
/// `HELP` and `TYPE` are written once, followed by the series of every source, as the text format
/// requires (a family repeated would be rejected by the scraper).
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<&'static str, FamilyText>,
}

#[derive(Debug)]
struct FamilyText {
    help: &'static str,
    kind: Type,
    samples: String,
}

impl Exposition {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every series of `series` that has one.
    pub fn add(&mut self, series: &Series) {
        for (name, family) in &series.families {
            if family.series.is_empty() && !family.declared {
                continue;
            }
            let text = self.families.entry(name).or_insert_with(|| FamilyText {
                help: family.help,
                kind: family.kind,
                samples: String::new(),
            });
            let out = &mut text.samples;
            for (key, value) in &family.series {
                let labels = label_text(&family.labels, key);
                match value {
                    Value::Number(v) => {
                        let _ = writeln!(out, "{name}{} {}", braces(&labels), number(*v));
                    }
                    Value::Histogram { buckets, sum, count } => {
                        for (bound, n) in DURATION_BUCKETS.iter().zip(buckets) {
                            let le = format!("le=\"{}\"", number(*bound));
                            let _ = writeln!(out, "{name}_bucket{} {n}", braces(&join(&labels, &le)));
                        }
                        let _ = writeln!(out, "{name}_bucket{} {count}", braces(&join(&labels, "le=\"+Inf\"")));
                        let _ = writeln!(out, "{name}_sum{} {}", braces(&labels), number(*sum));
                        let _ = writeln!(out, "{name}_count{} {count}", braces(&labels));
                    }
                }
            }
        }
    }

    /// Appends the families, by name, in the text format.
    pub fn render(&self, out: &mut String) {
        for (name, family) in &self.families {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            out.push_str(&family.samples);
        }
    }
}

fn label_text(names: &[&str], values: &[String]) -> String {
    names.iter().zip(values).map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",")
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() { b.to_string() } else { format!("{a},{b}") }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() { String::new() } else { format!("{{{labels}}}") }
}

/// A sample value as the text format spells it.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Escapes help text.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Def<2> = Def { name: "t_total", help: "A counter.", labels: ["route", "replica"] };
    const G: Def<1> = Def { name: "t_gauge", help: "A gauge.", labels: ["replica"] };
    const H: Def<1> = Def { name: "t_seconds", help: "A histogram.", labels: ["route"] };

    #[test]
    fn renders_the_text_format_and_drops_a_replica_everywhere() {
        let mut s = Series::new();
        s.add(&C, ["r", "a:1"], 2.0);
        s.add(&C, ["r", "a:1"], 3.0);
        s.add(&C, ["r", "b\"2"], 1.0);
        s.set(&G, ["a:1"], 0.5);
        s.observe(&H, ["r"], 0.02);
        s.observe(&H, ["r"], 7.0);
        let mut out = String::new();
        s.render(&mut out);
        for line in [
            "# HELP t_total A counter.",
            "# TYPE t_total counter",
            "t_total{route=\"r\",replica=\"a:1\"} 5",
            "t_total{route=\"r\",replica=\"b\\\"2\"} 1",
            "t_gauge{replica=\"a:1\"} 0.5",
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{route=\"r\",le=\"0.01\"} 0",
            "t_seconds_bucket{route=\"r\",le=\"0.025\"} 1",
            "t_seconds_bucket{route=\"r\",le=\"10\"} 2",
            "t_seconds_bucket{route=\"r\",le=\"+Inf\"} 2",
            "t_seconds_sum{route=\"r\"} 7.02",
            "t_seconds_count{route=\"r\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert_eq!(s.drop_labelled("replica", "a:1"), 2);
        assert!(!s.has_labelled("replica", "a:1"));
        let mut out = String::new();
        s.render(&mut out);
        assert!(!out.contains("a:1") && !out.contains("t_gauge"), "{out}");
        assert!(out.contains("t_seconds_count"), "other labels stay: {out}");
    }

    #[test]
    fn several_sources_share_one_header_per_family() {
        let (mut a, mut b) = (Series::new(), Series::new());
        a.add(&C, ["a", "x:1"], 1.0);
        b.add(&C, ["b", "y:2"], 2.0);
        b.set(&G, ["y:2"], 3.0);
        let mut e = Exposition::new();
        e.add(&a);
        e.add(&b);
        let mut out = String::new();
        e.render(&mut out);
        assert_eq!(out.matches("# HELP t_total").count(), 1, "{out}");
        assert_eq!(out.matches("# TYPE t_total").count(), 1, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("missing {l:?} in\n{out}"));
        // Each family's samples follow its own header, whichever source they came from.
        let (a_line, b_line) = ("t_total{route=\"a\",replica=\"x:1\"} 1", "t_total{route=\"b\",replica=\"y:2\"} 2");
        assert!(at("# TYPE t_total counter") < at(a_line) && at(a_line) < at(b_line), "{out}");
        assert!(at("# TYPE t_gauge gauge") < at("t_gauge{replica=\"y:2\"} 3"), "{out}");
        assert!(at("t_gauge{replica=\"y:2\"} 3") < at("# TYPE t_total counter"), "{out}");
        assert_eq!(out.matches("# TYPE t_gauge gauge").count(), 1);
    }

    #[test]
    fn a_declared_family_shows_before_its_first_series() {
        let mut s = Series::new();
        s.declare(&C, Type::Counter);
        let mut out = String::new();
        s.render(&mut out);
        assert_eq!(out, "# HELP t_total A counter.\n# TYPE t_total counter\n");
    }
}
