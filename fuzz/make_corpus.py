#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets (fuzz/corpus/<target>/seed-*).

The seeds are real requests (the README's and SPEC's examples and the protocol corner cases)
in each target's input format. Re-run after changing a target's input format:

    python3 fuzz/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


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


if __name__ == "__main__":
    main()
