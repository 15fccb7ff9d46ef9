//! The process's own metrics, with the names every Prometheus client library gives them:
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`. Read from `/proc/self` at each scrape (Linux); elsewhere, or when
//! `/proc` is not mounted, the metrics are left out rather than reported wrong.

use std::fmt::Write as _;

use crate::observe::series::number;

/// The names of the process metrics.
pub const NAMES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// The AT_CLKTCK entry of the auxiliary vector: the kernel's clock ticks per second.
const AT_CLKTCK: u64 = 17;

/// Appends the process metrics that can be read now.
pub fn render(out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", number(v));
        }
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name (which is in parentheses and may hold spaces): the state is field 3.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let ticks = clock_ticks();
    let cpu = field(14).zip(field(15)).zip(ticks).map(|((utime, stime), hz)| (utime + stime) / hz);
    metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu);
    metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", resident_bytes());
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as f64);
    metric("process_open_fds", "gauge", "Number of open file descriptors.", fds);
    metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", max_fds());
    let start = field(22).zip(ticks).zip(boot_time()).map(|((since_boot, hz), boot)| boot + since_boot / hz);
    metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start);
}

/// `VmRSS` from `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The soft limit on open files.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Clock ticks per second, from the auxiliary vector (pairs of native-endian u64 on 64-bit Linux).
fn clock_ticks() -> Option<f64> {
    let auxv = std::fs::read("/proc/self/auxv").ok()?;
    auxv.chunks_exact(16).find_map(|pair| {
        let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (key == AT_CLKTCK && value > 0).then_some(value as f64)
    })
}

/// When the machine booted, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            let line =
                out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {out}"));
            line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
        };
        assert!(value("process_resident_memory_bytes") > 1e6, "{out}");
        assert!(value("process_open_fds") >= 3.0, "{out}");
        assert!(value("process_cpu_seconds_total") >= 0.0, "{out}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 3600.0, "started within the hour: {start} vs {now}");
    }
}
