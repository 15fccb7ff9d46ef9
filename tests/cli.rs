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
    let (code, _, err) = replscope(&["replay"]);
    assert_eq!(code, 2);
    assert!(err.contains("Usage"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
