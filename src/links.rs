//! Talking to a running proxy's HTTP API: `replscope links` and `replscope fault …`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// A minimal HTTP/1.1 request (the API is plain HTTP); returns the body of a 2xx answer, or the API's
/// own error message.
pub fn request(
    http: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let http = &address(http)?;
    let mut s = TcpStream::connect(http).with_context(|| format!("no proxy API at {http}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("reading from {http}"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("{http} did not answer HTTP") };
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| body.trim().to_string());
        bail!("{method} {path}: {status}: {message}");
    }
    Ok(body)
}

/// HOST:PORT from what the user gave: HOST:PORT, or a URL such as `http://127.0.0.1:9190/`.
pub fn address(given: &str) -> anyhow::Result<String> {
    let rest = match given.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => bail!("{given}: only http:// is served by the proxy's API, not {scheme}://"),
        None => given,
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() {
        bail!("{given} names no host");
    }
    // `[::1]:9190` has a port, `[::1]` has none.
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')));
    Ok(if has_port { host_port.to_string() } else { format!("{host_port}:80") })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The links table of the proxy whose API is at `http`.
pub fn table(http: &str) -> anyhow::Result<String> {
    let body = request(http, "GET", "/api/links", None, None)?;
    let links: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{http}/api/links is not JSON"))?;
    Ok(replscope::observe::table::render(&links))
}

/// One line per fault.
pub fn faults_table(faults: &serde_json::Value) -> String {
    let mut out = String::from("ID  KIND       DIRECTION          WHEN                SCOPE     FIRED  SETTINGS\n");
    let list = faults.as_array().cloned().unwrap_or_default();
    for f in &list {
        out.push_str(&format!("{}\n", fault_line(f)));
    }
    if list.is_empty() {
        out.push_str("(no faults)\n");
    }
    out
}

/// A fault in one line.
pub fn fault_line(f: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let when = match f["trigger"]["when"].as_str() {
        Some("phase") => format!("phase={}", s(&f["trigger"]["phase"])),
        Some("in_phase_for") => format!("phase={}+{}s", s(&f["trigger"]["phase"]), s(&f["trigger"]["after"])),
        Some("rdb_bytes") => format!("rdb-bytes={}", s(&f["trigger"]["bytes"])),
        Some("rdb_percent") => format!("rdb-percent={}", s(&f["trigger"]["percent"])),
        _ => "now".into(),
    };
    let settings: Vec<String> = [
        "rate_bytes_per_second",
        "delay",
        "jitter",
        "duration",
        "how",
        "bytes",
        "route",
        "replica",
        "expires_after",
        "times",
    ]
    .iter()
    .filter(|k| !f[**k].is_null())
    .map(|k| format!("{k}={}", s(&f[*k])))
    .collect();
    format!(
        "{:<3} {:<10} {:<18} {:<19} {:<9} {:<6} {}",
        s(&f["id"]),
        s(&f["kind"]),
        s(&f["direction"]),
        when,
        s(&f["scope"]),
        s(&f["fired"]),
        settings.join(" ")
    )
}
