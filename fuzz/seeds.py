#!/usr/bin/env python3
"""fuzz/seeds.py CAPTURES CORPUS — writes the seed corpus of every fuzz target from the recordings in
CAPTURES (tests/data/captures/*.jsonl) into CORPUS/<target>/: each connection's bytes, in the framing its
target reads (see fuzz/src/lib.rs), at most 64 KiB a seed. Also a few introspection answers and the
example configuration. Run by fuzz/run; nothing here is committed under fuzz/corpus."""

import json
import pathlib
import struct
import sys

LIMIT = 64 << 10


def pieces(reads):
    """The fuzz_targets' piece encoding: control byte (bit 7 master->replica, bits 0-6 length-1)."""
    out = bytearray()
    for direction, data in reads:
        flag = 0x80 if direction == "m2r" else 0
        for i in range(0, len(data), 128):
            chunk = data[i:i + 128]
            out.append(flag | (len(chunk) - 1))
            out += chunk
            if len(out) >= LIMIT:
                return bytes(out)
    return bytes(out)


def main(captures, corpus):
    corpus = pathlib.Path(corpus)
    targets = ["replica_commands", "master_replies", "rdb", "stream", "link", "introspection", "config", "recording"]
    for t in targets:
        (corpus / t).mkdir(parents=True, exist_ok=True)

    def seed(target, name, data):
        (corpus / target / name).write_bytes(data)

    for path in sorted(pathlib.Path(captures).glob("*.jsonl")):
        conns = {}
        text = path.read_text()
        seed("recording", path.stem, text[:LIMIT].encode())
        for line in text.splitlines():
            r = json.loads(line)
            if "hex" not in r:
                continue
            conns.setdefault(r["conn"], []).append((r["dir"], bytes.fromhex(r["hex"])))
        for conn, reads in conns.items():
            name = f"{path.stem}-{conn}"
            r2m = b"".join(d for k, d in reads if k == "r2m")
            m2r = b"".join(d for k, d in reads if k == "m2r")
            seed("replica_commands", name, b"\x00" + r2m[:LIMIT])
            seed("master_replies", name, pieces([("m2r", m2r[:LIMIT])]))
            seed("link", name, pieces(reads))
            # The payload: after its `$<len>` or `$EOF:<mark>` line.
            for magic in (b"REDIS0", b"VALKEY"):
                at = m2r.find(magic)
                if at < 0:
                    continue
                line_start = m2r.rfind(b"$", 0, at)
                header = m2r[line_start:at].strip()
                body = m2r[at:at + LIMIT]
                if header.startswith(b"$EOF:"):
                    seed("rdb", name, b"\x01" + header[5:45].ljust(40, b"0") + b"\x00" + body)
                else:
                    size = int(header[1:] or b"0")
                    seed("rdb", name, b"\x00" + struct.pack("<Q", size) + b"\x00" + body)
                break
            # The stream: what follows +CONTINUE on a partial resync.
            cont = m2r.find(b"+CONTINUE")
            if cont >= 0:
                start = m2r.find(b"\r\n", cont) + 2
                seed("stream", name, b"\x00" + m2r[start:start + LIMIT])

    answers = {
        "config-get": b"*4\r\n$12\r\nrepl-timeout\r\n$2\r\n60\r\n$25\r\nclient-output-buffer-limit\r\n"
                      b"$59\r\nnormal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60\r\n",
        "info-replication": b"$88\r\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
                            b"slave0:ip=127.0.0.1,port=6380,state=online,offset=42\r\n\r\n",
        "client-list": b"$101\r\nid=7 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=9 name= age=3 flags=S omem=0 obl=0 "
                       b"oll=0 cmd=psync user=default\n\r\n",
        "noperm": b"-NOPERM User intro has no permissions to run the 'config|get' command\r\n",
        "nested": b"*2\r\n*1\r\n:1\r\n$-1\r\n",
    }
    for name, data in answers.items():
        seed("introspection", name, b"\x00" + data)
    example = pathlib.Path(captures).parents[2] / "deploy" / "replscope.toml"
    if example.exists():
        seed("config", "example", example.read_bytes())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
