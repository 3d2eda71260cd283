#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (fuzz/corpus/<target>/seed-*).

The seeds are real requests (the README's and SPEC's examples and the protocol corner cases)
in each target's input format; the RPC targets' seeds are the golden coro_rpc frames captured
between upstream's client and master (core/src/rpc/testdata/rpc-frames*.txt, copies of the
reference transcripts) and the framing corner cases. Re-run after changing a target's input format:

    python3 fuzz/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
RPC_TESTDATA = os.path.join(HERE, "..", "core", "src", "rpc", "testdata")
RPC_FILES = ("rpc-frames.txt", "rpc-frames-raw.txt", "rpc-frames-probe.txt")


def req(method, target, body=b"", headers=(), version="HTTP/1.1", length=True):
    head = f"{method} {target} {version}\r\n".encode()
    for h in headers:
        head += h.encode() + b"\r\n"
    if body and length:
        head += f"Content-Length: {len(body)}\r\n".encode()
    return head + b"\r\n" + body


def chunked(method, target, pieces, trailer=b""):
    out = req(method, target, headers=["Transfer-Encoding: chunked"])
    for i, p in enumerate(pieces):
        ext = b";ext=1" if i == 0 else b""
        out += b"%x" % len(p) + ext + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


PUT_JSON = req("PUT", "/api/put", b'{"key":"my_object","value":"hello world"}')

HTTP = {
    "health": req("GET", "/health"),
    "health-json": req("GET", "/health", headers=["Accept: application/json"]),
    "head-health": req("HEAD", "/health"),
    "metrics": req("GET", "/metrics"),
    "summary": req("GET", "/metrics/summary"),
    "options-star": req("OPTIONS", "*"),
    "options-route": req("OPTIONS", "/api/put"),
    "method-not-allowed": req("DELETE", "/metrics"),
    "not-found": req("GET", "/api/../health"),
    "put-get-exist-remove": PUT_JSON
    + req("GET", "/api/get/my_object")
    + req("HEAD", "/api/get/my_object")
    + req("GET", "/api/exist/my_object")
    + req("DELETE", "/api/remove/my_object")
    + req("GET", "/api/exist/my_object"),
    "put-raw": req("PUT", "/api/put/my%2Fblob", b"\x00\x01\x02binary\xff")
    + req("GET", "/api/get/my%2Fblob"),
    "put-raw-expect": req("PUT", "/api/put/k", b"abc", headers=["Expect: 100-continue"]),
    "put-raw-chunked": chunked("PUT", "/api/put/k", [b"hello ", b"world"], b"X-T: 1\r\n")
    + req("GET", "/api/get/k"),
    "put-then-lease-remove": PUT_JSON + req("GET", "/api/get/my_object") + req("DELETE", "/api/remove/my_object"),
    "remove-all": PUT_JSON + req("DELETE", "/api/remove_all"),
    "query-key": PUT_JSON + req("GET", "/query_key?key=my_object") + req("GET", "/query_key?key="),
    "batch-get": PUT_JSON + req("GET", "/batch_query_keys?keys=my_object,missing_key,my_object"),
    "batch-post": req("POST", "/batch_query_keys", b'{"keys":["a,b","c"]}'),
    "all-keys": PUT_JSON
    + req("PUT", "/api/put", b'{"key":"a1","value":"v"}')
    + req("GET", "/get_all_keys?prefix=a&limit=2&after=a0")
    + req("GET", "/get_all_keys", version="HTTP/1.0"),
    "segments": req("GET", "/get_all_segments")
    + req("GET", "/query_segment?segment=127.0.0.1%3A8080")
    + req("GET", "/get_segments_detail"),
    "mount": req("POST", "/api/mount", b'{"size":16777216,"protocol":"tcp","location":""}'),
    "mount-shm": req("POST", "/api/mount_shm", b'{"name":"/seg","size":16384,"offset":4096,"protocol":"rdma"}'),
    "unmount": req(
        "POST",
        "/api/unmount",
        b'{"segment_ids":["5a9e2d14-7b3c-4f08-b6e1-c2d4a8f07b95"],"grace_period_seconds":30}',
    ),
    "unmount-shm": req("POST", "/api/unmount_shm", b'{"segment_ids":"abc"}'),
    "http10-keepalive": req("GET", "/health", headers=["Connection: keep-alive"], version="HTTP/1.0")
    + req("GET", "/health", version="HTTP/1.0"),
    "absolute-form": req("GET", "http://127.0.0.1:8080/health?x=1"),
    "connection-close": req("GET", "/health", headers=["Connection: close"]) + req("GET", "/health"),
    "bad-request": b"GET /a b HTTP/1.1\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "both-framings": req("PUT", "/api/put/k", b"abc", headers=["Transfer-Encoding: chunked"]),
    "too-large": req("PUT", "/api/put/k", headers=["Content-Length: 99999999999"]),
    "expect-unknown": req("PUT", "/api/put/k", b"abc", headers=["Expect: something"]),
    "bare-lf": b"GET /health HTTP/1.1\nHost: x\n\nGET /health HTTP/1.1\n\n",
    "incomplete": b"GET /health HTTP/1.1\r\nHost: exa",
    # Found by http_split: a bare `HEAD` request line was answered differently when split.
    "malformed-head-line": b"HEAD\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    "incomplete-body": b"PUT /api/put/k HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
}

# json_api: route index (see ROUTES in fuzz_targets/json_api.rs), mode 0 (raw), input.
JSON_API = {
    "mount": (0, b'{"size":16777216,"protocol":"tcp","location":""}'),
    "mount-bad-size": (0, b'{"size":16.0}'),
    "mount-shm": (1, b'{"name":"/seg","size":16384,"offset":0,"protocol":"tcp","location":""}'),
    "mount-shm-missing": (1, b'{"name":"/mooncake_segment","size":16777216}'),
    "unmount": (2, b'{"segment_ids":["5a9e2d14-7b3c-4f08-b6e1-c2d4a8f07b95"],"grace_period_seconds":30}'),
    "unmount-shm": (3, b'{"segment_ids":"b7e04c2a-1f53-4c8e-9b2d-6a7e3f90c5d1"}'),
    "put": (4, b'{"key":"my_object","value":"hello world"}'),
    "put-escapes": (4, b'{"key":"\\u00e9\\ud83d\\ude00","value":"a\\nb\\"c"}'),
    "put-dup": (4, b'{"key":"a","key":"b","value":"v"}'),
    "batch-post": (5, b'{"keys":["a,b","c"]}'),
    "query-key": (6, b"my_object"),
    "batch-get": (7, b"my_object,missing_key,my_object"),
    "all-keys": (8, b"prefix=a&limit=2&after=a1"),
    "query-segment": (9, b"127.0.0.1%3A8080"),
    "get": (10, b"my_object"),
    "remove": (13, b"a%2Fb"),
    "put-raw": (14, b"k\nhello"),
}

# store_ops: opcode bytes and parameters (see Harness::step in fuzz_targets/store_ops.rs).
MOUNT, MOUNT_SHM, UNMOUNT, PUT, BEGIN, WRITE, COMPLETE, ABORT, GET, DROP, REMOVE, REMOVE_ALL, ADVANCE, REPLACE = range(14)


def u16(n):
    return struct.pack("<H", n)


STORE = {
    "put-get-remove": bytes([MOUNT, 3, 0, PUT, 1]) + u16(100) + bytes([7, GET, 1, 3, REMOVE, 1, ADVANCE]) + u16(1500)
    + bytes([REMOVE, 1]),
    "write-stream": bytes([MOUNT, 4, 0, BEGIN, 2]) + u16(5000) + bytes([1, WRITE, 0]) + u16(1000)
    + bytes([GET, 2, 1, COMPLETE, 0, GET, 2, 1]),
    "unmount-during-write": bytes([MOUNT, 2, 0, BEGIN, 0]) + u16(300) + bytes([5, UNMOUNT, 0]) + u16(0)
    + bytes([0, COMPLETE, 0]),
    "graceful": bytes([MOUNT_SHM, 4, PUT, 3]) + u16(2000) + bytes([9, GET, 3, 1, UNMOUNT, 0]) + u16(1000)
    + bytes([1, ADVANCE]) + u16(2000) + bytes([DROP, 0]),
    "evict": bytes([MOUNT, 1, 0]) + b"".join(bytes([PUT, k]) + u16(900) + bytes([k]) for k in range(6)),
    "replace-leased": bytes([MOUNT, 8, 0, PUT, 0]) + u16(20000) + bytes([1, GET, 0, 3, REPLACE, 0, 2, REMOVE, 0]),
    "abort-remove-all": bytes([MOUNT, 2, 0, BEGIN, 4]) + u16(10) + bytes([1, PUT, 5]) + u16(10)
    + bytes([1, ABORT, 0, REMOVE_ALL]),
}


def rpc_frames():
    """(file, conn, direction, method, frame bytes) of every captured frame, in file order.

    Lines are `DIR CONN HEX  # annotation` (DIR `C->M` request, `M->C` reply); the annotation
    names the method (after an optional `+0.463s` time)."""
    out = []
    for name in RPC_FILES:
        with open(os.path.join(RPC_TESTDATA, name)) as f:
            for line in f:
                data, _, note = line.partition("#")
                parts = data.split()
                if len(parts) != 3 or parts[0] not in ("C->M", "M->C"):
                    continue
                words = [w for w in note.split() if not w.startswith("+")]
                method = words[0] if words else "frame"
                out.append((name, int(parts[1]), parts[0], method, bytes.fromhex(parts[2])))
    return out


def rpc_req(seq, fid, body=b"", attach=b"", magic=0x15, version=0, stype=0, length=None):
    """A coro_rpc request frame (20-byte header, body, attachment)."""
    n = len(body) if length is None else length
    return bytes([magic, version, stype, 0]) + struct.pack("<IIII", seq, fid, n, len(attach)) + body + attach


SERVICE_READY = 0x7B81BB56  # the function id of ServiceReady
UNKNOWN_FN = 0x12345678  # no method has this id

# Framing corner cases (rpc-spec §2.5): pipelining, attachments, unknown ids, a bad magic /
# version / serialize type (closes without a reply), an oversized frame (closes), a truncated
# frame (dropped at EOF), a large announced frame that never comes.
RPC_EDGES = {
    "pipelined-ready": rpc_req(1, SERVICE_READY) + rpc_req(2, SERVICE_READY) + rpc_req(3, SERVICE_READY),
    "attachment": rpc_req(5, SERVICE_READY, attach=b"attached bytes") + rpc_req(6, SERVICE_READY),
    "unknown-function": rpc_req(7, UNKNOWN_FN, b"\x01\x02") + rpc_req(8, SERVICE_READY),
    "bad-magic": rpc_req(9, SERVICE_READY) + rpc_req(10, SERVICE_READY, magic=0x16) + rpc_req(11, SERVICE_READY),
    "bad-version": rpc_req(12, SERVICE_READY, version=1) + rpc_req(13, SERVICE_READY),
    "bad-serialize-type": rpc_req(14, SERVICE_READY, stype=1),
    "oversized": rpc_req(15, SERVICE_READY) + rpc_req(16, SERVICE_READY, length=(256 << 20) + 1),
    "truncated": rpc_req(17, SERVICE_READY) + rpc_req(18, SERVICE_READY, b"abc", length=10),
    # A header that announces the largest frame accepted (256 MiB) and nothing else: the
    # connection must not size its buffer by the announcement.
    "announces-max-frame": rpc_req(19, SERVICE_READY, length=256 << 20),
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"seed-{name}"), "wb") as f:
        f.write(data)


def main():
    for name, data in HTTP.items():
        write("http_conn", name, data)
        # http_split: two split offsets, then the request bytes.
        n = len(data)
        write("http_split", name, bytes([2]) + u16(n // 3) + u16(n // 2) + data)
    for name, (route, body) in JSON_API.items():
        write("json_api", name, bytes([route, 0]) + body)
    for name, data in STORE.items():
        write("store_ops", name, data)
    rpc_seeds()


def rpc_conn_input(stream, n_cuts=2, ctl=0, event_at=0):
    """rpc_conn's input: split offsets, event byte and offset, then the request bytes."""
    n = len(stream)
    cuts = [n // 3, n // 2][:n_cuts]
    return bytes([len(cuts)]) + b"".join(u16(c) for c in cuts) + bytes([ctl]) + u16(event_at) + stream


def rpc_seeds():
    frames = rpc_frames()
    # rpc_codec: up to two distinct request frames (header and body: the target decodes the
    # body as the function's request type) and reply bodies (decoded as every result type)
    # per method.
    seen = set()
    count = {}
    for _, _, direction, method, raw in frames:
        kind, data = ("request", raw) if direction == "C->M" else ("reply", raw[16:])
        if len(data) < 4 or data in seen:
            continue
        seen.add(data)
        key = f"{method}-{kind}"
        count[key] = count.get(key, 0) + 1
        if count[key] <= 2:
            write("rpc_codec", f"{key}-{count[key]}", data)
    # rpc_conn: each captured connection's requests as one stream (EOF at the end, drained),
    # and the same stream with a shutdown in the middle while 7 bytes are consumed at a time.
    conns = {}
    for fname, conn, direction, _, raw in frames:
        if direction == "C->M":
            conns.setdefault((fname, conn), []).append(raw)
    for (fname, conn), reqs in conns.items():
        stream = b"".join(reqs)
        name = f"{fname[:-4]}-conn{conn}"
        write("rpc_conn", name, rpc_conn_input(stream))
        write("rpc_conn", f"{name}-shutdown", rpc_conn_input(stream, ctl=1 | 2 | (7 << 2), event_at=len(stream) // 2))
    for name, stream in RPC_EDGES.items():
        write("rpc_conn", name, rpc_conn_input(stream))
        write("rpc_codec", f"edge-{name}", stream)


if __name__ == "__main__":
    main()
