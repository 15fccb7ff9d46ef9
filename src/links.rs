//! `replscope links`: fetches `/api/links` from a running proxy and prints it as a table.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// A minimal HTTP/1.1 GET (the API is plain HTTP on a trusted address); returns the body.
pub fn get(http: &str, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(http).with_context(|| format!("no proxy API at {http}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nAccept: application/json\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).with_context(|| format!("reading from {http}"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("{http} did not answer HTTP") };
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{http}{path}: {status}");
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
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
    let body = get(http, "/api/links")?;
    let links: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{http}/api/links is not JSON"))?;
    Ok(replscope::observe::table::render(&links))
}
