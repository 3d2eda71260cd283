"""The unchanged upstream store client against mc-master's data plane.

usage: client.py MASTER METADATA a|b
  a: a client without memory of its own (global segment 0): reads `mc-key` (put over
     mc-master's REST API), then puts and reads back a 57 B and a 3 MiB value, which can
     only land in mc-master's memory. Prints `RESULT {json}`.
  b: a client with a 16 MiB segment on a master without memory: puts `own` (1 MiB) and
     `small` into its own memory, prints `READY {json}`, then serves them over its transfer
     engine; each stdin line `get KEY` prints `GOT KEY <length> <sha256 hex>` (a value put
     over mc-master's REST API lands in this client's memory), `done` ends it.
The values are the same functions of their index as in tests/dataplane_upstream.rs.
"""
import hashlib
import json
import sys

from mooncake.store import MooncakeDistributedStore


def pattern(n, mul, add):
    return bytes((i * mul + add) & 0xFF for i in range(n))


def main():
    master, meta, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    s = MooncakeDistributedStore()
    out = {}
    if mode == "a":
        out["setup"] = s.setup("127.0.0.1", meta, 0, 16 << 20, "tcp", "", master)
        got = s.get("mc-key")
        out["get_rest_value"] = got.decode(errors="replace") if got else None
        small = b"written-by-upstream-client:" + bytes(range(48, 58)) * 3
        out["put_57"] = s.put("k57", small)
        out["get_57"] = s.get("k57") == small
        big = pattern(3 << 20, 31, 0)
        out["put_3MiB"] = s.put("big", big)
        out["get_3MiB"] = s.get("big") == big
        print("RESULT " + json.dumps(out), flush=True)
    else:
        out["setup"] = s.setup("127.0.0.1", meta, 16 << 20, 16 << 20, "tcp", "", master)
        out["put_own"] = s.put("own", pattern(1 << 20, 7, 3))
        out["put_small"] = s.put("small", b"tiny-value-in-client-memory")
        print("READY " + json.dumps(out), flush=True)
        for line in sys.stdin:
            words = line.split()
            if words[:1] != ["get"]:
                break
            got = s.get(words[1]) or b""
            print(f"GOT {words[1]} {len(got)} {hashlib.sha256(got).hexdigest()}", flush=True)
    s.close()


if __name__ == "__main__":
    main()
