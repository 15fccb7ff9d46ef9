//! The values a route and a process take, parsed the same way from a flag and from the configuration
//! file: addresses, sizes, durations and the master's settings. Each error is a sentence that says
//! what was wrong and, where it helps, what to write instead.

use std::time::Duration;

use crate::link::forecast::OutputBufferLimit;

/// Whether a value is named like an environment variable by convention (`NAME_LIKE_THIS`: capitals,
/// digits and `_`, not starting with a digit). Anything else given where a variable's name belongs may be
/// the secret itself, and is never repeated in a message.
pub fn looks_like_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 128
}

/// A master, HOST:PORT, with a port: a master without one would be dialled on a guess.
pub fn master(s: &str) -> Result<String, String> {
    host_port(s, false)
}

/// An address to listen on, HOST:PORT (port 0: any free port).
pub fn listen(s: &str) -> Result<String, String> {
    host_port(s, true)
}

fn host_port(s: &str, port_zero: bool) -> Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s} has no port: give HOST:PORT, e.g. {s}:6379"));
    };
    // `::1` alone splits inside the address: IPv6 needs brackets.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("{s}: write an IPv6 address in brackets with its port, e.g. [::1]:6379"));
    }
    if host.is_empty() || host == "[]" {
        return Err(format!("{s} has no host"));
    }
    match port.parse::<u16>() {
        Ok(0) if !port_zero => Err(format!("{s}: 0 is not a port to dial (1-65535)")),
        Ok(_) => Ok(s.to_string()),
        Err(_) => Err(format!("{s}: {port:?} is not a port (0-65535)")),
    }
}

/// The master's `client-output-buffer-limit replica`, e.g. `256mb 64mb 60`.
pub fn output_buffer_limit(s: &str) -> Result<OutputBufferLimit, String> {
    OutputBufferLimit::parse(s)
}

/// The master's `repl-timeout`, at least a second.
pub fn repl_timeout(s: &str) -> Result<Duration, String> {
    match crate::fault::spec::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(format!("{s} is shorter than a second (repl-timeout is in whole seconds)")),
        Err(e) => Err(e.0),
    }
}

/// How long a replica with no open link is remembered; `0` for ever.
pub fn forget_after(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    crate::fault::spec::parse_duration(s).map_err(|e| e.0)
}

/// The master's `repl-backlog-size`.
pub fn backlog(s: &str) -> Result<u64, String> {
    match crate::size::parse_size(s) {
        Ok(0) => Err(format!("{s} is no backlog (the smallest repl-backlog-size is 16kb)")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Bytes buffered per direction per link, 1KiB to 1GiB.
pub fn buffer(s: &str) -> Result<usize, String> {
    let n = crate::size::parse_size(s).map_err(|e| e.to_string())?;
    if !(1024..=(1 << 30)).contains(&n) {
        return Err(format!("{s} is outside 1KiB..1GiB"));
    }
    usize::try_from(n).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_port_and_ipv6_brackets() {
        assert_eq!(master("10.0.0.5:6379").as_deref(), Ok("10.0.0.5:6379"));
        assert_eq!(master("[::1]:6379").as_deref(), Ok("[::1]:6379"));
        assert!(master("10.0.0.5").unwrap_err().contains("has no port"));
        assert!(master("::1:6379").unwrap_err().contains("brackets"));
        assert!(master(":6379").unwrap_err().contains("no host"));
        assert!(master("h:0").unwrap_err().contains("not a port to dial"));
        assert!(master("h:99999").unwrap_err().contains("not a port"));
        assert_eq!(listen("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
    }

    #[test]
    fn sizes_and_durations_are_bounded() {
        assert_eq!(buffer("1MiB"), Ok(1 << 20));
        assert!(buffer("10").is_err());
        assert_eq!(backlog("1mb"), Ok(1 << 20));
        assert!(backlog("0").is_err());
        assert_eq!(repl_timeout("60s"), Ok(Duration::from_secs(60)));
        assert!(repl_timeout("500ms").is_err());
        assert_eq!(forget_after("0"), Ok(Duration::ZERO));
        assert_eq!(forget_after("10m"), Ok(Duration::from_secs(600)));
    }
}
