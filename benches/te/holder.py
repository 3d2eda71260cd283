"""A store client that holds a value in its own memory, for benches/te/te.py.

usage: holder.py MASTER METADATA KEY SIZE

Joins the cluster at MASTER (RPC address) with a 16 MiB segment of its own, puts KEY with
SIZE bytes (the byte at offset i is (i * 7 + 3) & 0xff), prints `READY {json}` and keeps
serving the value over its transfer engine until a line arrives on stdin (or stdin closes).
Run it where it is the only node with memory, so that the value lands in its segment.
"""
import json
import sys

from mooncake.store import MooncakeDistributedStore


def pattern(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def main():
    master, meta, key, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    s = MooncakeDistributedStore()
    out = {"setup": s.setup("127.0.0.1", meta, 16 << 20, 16 << 20, "tcp", "", master)}
    if out["setup"] == 0:
        out["put"] = s.put(key, pattern(size))
    print("READY " + json.dumps(out), flush=True)
    sys.stdin.readline()
    s.close()


if __name__ == "__main__":
    main()
