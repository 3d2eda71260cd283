#!/usr/bin/env python3
"""Preloads keys into upstream Mooncake for benches/load.py (run with the venv's python).

Joins the cluster as a client without a segment of its own (global_segment_size 0), so
every value lands in the segment of the store REST service under test, and writes the
values with put_batch (the REST API would take minutes for 100k keys). Exits 0 when
every put succeeded.

Usage: upstream_loader.py MASTER_ADDR METADATA_URL PREFIX FIRST COUNT VALUE_LEN [FMT]
"""

import sys

from mooncake.store import MooncakeDistributedStore


def main():
    master, metadata, prefix, first, count, value_len = sys.argv[1:7]
    fmt = sys.argv[7] if len(sys.argv) > 7 else "%07d"
    first, count, value_len = int(first), int(count), int(value_len)
    batch_bytes = 64 << 20
    store = MooncakeDistributedStore()
    rc = store.setup("127.0.0.1", metadata, 0, 2 * batch_bytes + (16 << 20), "tcp", "", master)
    if rc != 0:
        print("setup failed: %d" % rc, file=sys.stderr)
        return 1
    per_batch = max(1, min(1000, batch_bytes // max(1, value_len)))
    value = b"v" * value_len
    done = 0
    failed = 0
    while done < count:
        n = min(per_batch, count - done)
        keys = [prefix + (fmt % (first + done + j)) for j in range(n)]
        if n == 1:
            rc = store.put(keys[0], value)
        else:
            rc = store.put_batch(keys, [value] * n)
        if rc != 0:
            failed += n
        done += n
    store.close()
    if failed:
        print("%d of %d puts failed" % (failed, count), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
