//! `replscope links`: the API's links as a table a person reads at a glance.

use crate::observe::words::human_bytes;

/// How many closed links the table shows (the newest).
pub const CLOSED_SHOWN: usize = 10;

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn age(secs: f64) -> String {
    match secs {
        s if s < 60.0 => format!("{s:.0}s"),
        s if s < 3600.0 => format!("{:.0}m{:02.0}s", (s / 60.0).floor(), s % 60.0),
        s => format!("{:.0}h{:02.0}m", (s / 3600.0).floor(), (s % 3600.0) / 60.0),
    }
}

fn rdb_cell(link: &serde_json::Value) -> String {
    let rdb = &link["rdb"];
    if rdb.is_null() {
        return "-".into();
    }
    let done = rdb["transferred"].as_f64().unwrap_or(0.0);
    let size = rdb["announced_size"].as_f64().or_else(|| (!rdb["completed_at"].is_null()).then_some(done));
    let rate = link["rdb_rate_bytes_per_second"].as_f64().map(|r| format!(" {}/s", human_bytes(r))).unwrap_or_default();
    let check = match rdb["trailer"]["status"].as_str() {
        Some("ok") => " ok",
        Some("mismatch") => " CRC!",
        _ => "",
    };
    match size {
        Some(size) if size > 0.0 => {
            format!("{}/{} {:.0}%{rate}{check}", human_bytes(done), human_bytes(size), done * 100.0 / size)
        }
        _ => format!("{}{rate}{check}", human_bytes(done)),
    }
}

fn close_cell(link: &serde_json::Value) -> String {
    let c = &link["close"];
    if c.is_null() {
        return String::new();
    }
    let how = match &c["how"] {
        serde_json::Value::String(h) => h.clone(),
        serde_json::Value::Object(o) => o.get("error").map(|e| format!("error: {}", s(e))).unwrap_or_default(),
        _ => String::new(),
    };
    let cause = match link["diagnosis"]["cause"].as_str() {
        Some(cause) if link["diagnosis"]["settled"] == true => format!(": {cause}"),
        Some(cause) => format!(": {cause}?"),
        None => String::new(),
    };
    format!("by {} ({how}) in {}{cause}", s(&c["by"]), s(&c["phase"]))
}

/// The faults that touched a link: `kind#id`, each once.
fn faults_cell(link: &serde_json::Value) -> String {
    let mut seen: Vec<String> = Vec::new();
    for f in link["faults"].as_array().into_iter().flatten() {
        let tag = format!("{}#{}", s(&f["kind"]), s(&f["fault"]));
        if !seen.contains(&tag) {
            seen.push(tag);
        }
    }
    if seen.is_empty() { "-".into() } else { seen.join(",") }
}

/// Renders `/api/links` (a JSON array) as a table: open links, then the newest closed ones.
pub fn render(links: &serde_json::Value) -> String {
    let all: Vec<&serde_json::Value> = links.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let open: Vec<_> = all.iter().filter(|l| l["open"].as_bool() == Some(true)).copied().collect();
    let mut closed: Vec<_> = all.iter().filter(|l| l["open"].as_bool() != Some(true)).copied().collect();
    closed.reverse();
    closed.truncate(CLOSED_SHOWN);
    let header = ["ID", "ROUTE", "REPLICA", "KIND", "PHASE", "RDB", "LAG", "AGE", "FAULTS", "CLOSE"];
    let mut rows: Vec<[String; 10]> = Vec::new();
    for l in open.iter().chain(closed.iter()) {
        let phase = l["phases"].as_array().and_then(|p| p.last()).map(|p| s(&p["phase"])).unwrap_or_default();
        rows.push([
            s(&l["id"]),
            s(&l["route"]),
            s(&l["replica"]),
            s(&l["kind"]),
            phase,
            rdb_cell(l),
            l["lag_bytes"].as_i64().map_or("-".into(), |v| human_bytes(v as f64)),
            age(l["age_seconds"].as_f64().unwrap_or(0.0)),
            faults_cell(l),
            close_cell(l),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        if let Some(last) = out.last_mut() {
            *last = last.trim_end().to_string();
        }
        out.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    let shown: Vec<&&serde_json::Value> = open.iter().chain(closed.iter()).collect();
    for (row, link) in rows.iter().zip(shown) {
        out += &line(row);
        if let Some(why) = link["refusal_explanation"].as_str() {
            out += &format!("    ↳ partial resync refused: {why}\n");
        }
        if let Some(why) = link["explanation"].as_str().filter(|_| link["open"] != true) {
            out += &format!("    └ {why}\n");
        }
    }
    if rows.is_empty() {
        out += "(no links yet: point a replica's replicaof at the proxy)\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_and_a_closed_link_read_at_a_glance() {
        let links = serde_json::json!([
            {"id": 1, "route": "main", "replica": "10.0.0.7:6379", "kind": "replication", "open": false,
             "phases": [{"phase": "handshake"}, {"phase": "closed"}], "rdb": null, "lag_bytes": null, "age_seconds": 3.0,
             "close": {"by": "master", "how": "fin", "phase": "rdb_transfer"}},
            {"id": 2, "route": "main", "replica": "10.0.0.7:6379", "kind": "replication", "open": true,
             "phases": [{"phase": "handshake"}, {"phase": "rdb_transfer"}],
             "rdb": {"transferred": 1048576, "announced_size": 4194304, "completed_at": null, "trailer": null},
             "rdb_rate_bytes_per_second": 524288.0, "lag_bytes": null, "age_seconds": 75.0, "close": null}
        ]);
        let t = render(&links);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID  ROUTE"), "{t}");
        assert!(
            lines[1].contains("rdb_transfer")
                && lines[1].contains("1.00 MiB/4.00 MiB 25% 512.00 KiB/s")
                && lines[1].contains("1m15s"),
            "{t}"
        );
        assert!(lines[2].contains("by master (fin) in rdb_transfer"), "{t}");
    }
}
