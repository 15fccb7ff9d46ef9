//! The `replscope` binary: `replay` tells a recording's story; bad input is one line and exit 2.

mod support;

use std::process::Command;

fn replscope(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_replscope")).args(args).output().expect("run replscope");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_tells_each_connection_s_story() {
    let file = support::captures_dir().join("redis-7.0.15-diskless.jsonl");
    let (code, out, err) = replscope(&["replay", file.to_str().expect("utf-8 path")]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.contains("conn 1  replication"), "{out}");
    assert!(out.contains("PSYNC ? -1 → FULLRESYNC 589939f8… 0 (full)"), "{out}");
    assert!(out.contains("EofMark · Redis 10 (server 7.0.15) · 57958 of 57958 bytes · checksum ok"), "{out}");
    assert!(out.contains("offset 71 · last ack 71 (lag 0) · select 1 set 1 incr 1"), "{out}");
    assert!(out.contains("closed by master (fin) in streaming"), "{out}");
    assert!(out.contains("CONTINUE 589939f8… (partial)"), "{out}");
}

#[test]
fn replay_json_is_one_story_per_line_without_secrets() {
    let file = support::captures_dir().join("redis-7.0.15-auth.jsonl");
    let (code, out, _) = replscope(&["replay", "--json", file.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0);
    let stories: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert_eq!(stories.len(), 2);
    assert_eq!(stories[0]["link"]["phases"].as_array().map(Vec::len), Some(6));
    assert_eq!(stories[0]["link"]["handshake"]["auth"]["accepted"], serde_json::Value::Bool(true));
    assert!(!out.contains("s3cret"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("replscope-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"t\": 0, \"conn\": 1, \"dir\": \"m2r\", \"hex\": \"0a\"}\n{\"t\": 1}\n").expect("write");
    for (args, want) in [
        (vec!["replay", "/nonexistent/recording.jsonl"], "replscope: cannot read /nonexistent/recording.jsonl"),
        (vec!["replay", bad.to_str().expect("utf-8")], "replscope: line 2: not a read record"),
    ] {
        let (code, out, err) = replscope(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
    }
    for (args, want) in [
        (vec!["replay"], "replscope: the following required arguments were not provided: <FILE> (see --help)"),
        (
            vec!["proxy"],
            "replscope: the following required arguments were not provided: --master <MASTER> (see --help)",
        ),
        (
            vec!["proxy", "--master", "m:6379", "--buffer", "lots"],
            "replscope: invalid value 'lots' for '--buffer <BUFFER>'",
        ),
        (
            vec!["proxy", "--master", "m:6379", "--buffer", "10"],
            "replscope: invalid value '10' for '--buffer <BUFFER>': 10 is outside",
        ),
        (vec!["frobnicate"], "replscope: unrecognized subcommand 'frobnicate'"),
        (
            vec!["proxy", "--master", "redis-main.internal"],
            "replscope: invalid value 'redis-main.internal' for '--master <MASTER>': redis-main.internal has no port: \
             give HOST:PORT, e.g. redis-main.internal:6379",
        ),
        (
            vec!["proxy", "--master", "::1"],
            "replscope: invalid value '::1' for '--master <MASTER>': ::1: write an IPv6",
        ),
        (
            vec!["proxy", "--master", "m:0"],
            "replscope: invalid value 'm:0' for '--master <MASTER>': m:0: 0 is not a port to dial",
        ),
        (
            vec!["proxy", "--master", "m:1", "--forget-after", "soon"],
            "replscope: invalid value 'soon' for '--forget-after",
        ),
        (vec!["links", "--http", "https://127.0.0.1:1"], "replscope: https://127.0.0.1:1: only http://"),
    ] {
        let (code, out, err) = replscope(&args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(want), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_address_in_use_is_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for flag in ["--listen", "--http"] {
        let mut args = vec!["proxy", "--master", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];
        let i = args.iter().position(|a| *a == flag).expect("flag") + 1;
        args[i] = &addr;
        let (code, _, err) = replscope(&args);
        assert_eq!(code, 2, "{flag}: {err}");
        let line = err.lines().last().unwrap_or_default();
        let what = if flag == "--listen" { "listen, route 127.0.0.1:1" } else { flag };
        assert!(line.starts_with(&format!("replscope: cannot listen on {addr} ({what})")), "{flag}: {err}");
        assert!(line.contains("in use"), "{flag}: {err}");
    }
}

#[test]
fn proxy_help_shows_examples_and_defaults() {
    let (code, out, _) = replscope(&["proxy", "--help"]);
    assert_eq!(code, 0);
    for want in [
        "Examples:",
        "REPLICAOF 127.0.0.1 6380",
        "[default: 127.0.0.1:6380]",
        "[default: 127.0.0.1:9190]",
        "[default: 1MiB]",
        "[default: 16MiB]",
        "[env: REPLSCOPE_MASTER=]",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn links_without_a_proxy_is_one_line_and_exit_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr = format!("127.0.0.1:{port}");
    for given in [addr.clone(), format!("http://{addr}"), format!("http://{addr}/api/links")] {
        let (code, out, err) = replscope(&["links", "--http", &given]);
        assert_eq!((code, out.as_str()), (2, ""));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("replscope: no proxy API at {addr}")), "{given}: {err}");
    }
}

#[test]
fn a_master_that_does_not_resolve_is_a_warning_at_start_and_logs_have_no_colour_off_a_terminal() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["proxy", "--master", "no-such-master.invalid:6379", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let ready = line.contains("replscope proxy ready");
        seen.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(text.contains("WARN") && text.contains("does not resolve"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI escapes when stderr is not a terminal: {text:?}");
}

#[test]
fn health_is_exit_0_with_a_proxy_and_1_without() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let addr = format!("127.0.0.1:{port}");
    let (code, out, err) = replscope(&["health", "--http", &addr]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("replscope: unhealthy: no proxy API at"), "{err}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_replscope"))
        .args(["proxy", "--master", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--http", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let healthy = loop {
        let (code, out, _) = replscope(&["health", "--http", &addr]);
        if code == 0 {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "the proxy never got healthy");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(healthy, "ok\n");
    let _ = child.kill();
    let _ = child.wait();
}
