"""A real ZMQ subscriber of mc-master's KV events (pyzmq + msgpack), for tests/kv_events.rs.

Connects a SUB socket to the endpoint, subscribes to everything (the topic frame is empty),
prints `ready`, then for every message checks upstream's framing (3 frames: empty topic,
8-byte big-endian sequence, msgpack [ms, [events], 0]) and prints one JSON line per event
(`--events`) or, in `--summary` mode, one JSON line at the end. Stops after the stored event
of `--end-key`.
"""
import argparse
import json
import sys

import msgpack
import zmq


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("--end-key", default="__end__")
    p.add_argument("--summary", action="store_true")
    p.add_argument("--timeout-ms", type=int, default=60000)
    a = p.parse_args()
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(a.endpoint)
    print("ready", flush=True)
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    last_seq = None
    last_id = None
    summary = {"batches": 0, "events": 0, "stored": 0, "removed": 0, "seq_gaps": 0, "id_gaps": 0, "bad": 0}
    while True:
        if not poller.poll(a.timeout_ms):
            print(json.dumps({"timeout": True, **summary}), flush=True)
            return 1
        frames = s.recv_multipart()
        if len(frames) != 3 or frames[0] != b"" or len(frames[1]) != 8:
            summary["bad"] += 1
            print(json.dumps({"bad_frames": [len(f) for f in frames]}), flush=True)
            continue
        seq = int.from_bytes(frames[1], "big")
        batch = msgpack.unpackb(frames[2], raw=False)
        if not (isinstance(batch, list) and len(batch) == 3 and batch[2] == 0 and isinstance(batch[0], int)):
            summary["bad"] += 1
            continue
        if last_seq is not None and seq != last_seq + 1:
            summary["seq_gaps"] += 1
        last_seq = seq
        summary["batches"] += 1
        end = False
        for ev in batch[1]:
            if last_id is not None and ev["event_id"] != last_id + 1:
                summary["id_gaps"] += 1
            last_id = ev["event_id"]
            summary["events"] += 1
            summary[ev["event_type"]] += 1
            if not a.summary:
                print(json.dumps({
                    "seq": seq,
                    "event_id": ev["event_id"],
                    "event_type": ev["event_type"],
                    "type": ev.get("type"),
                    "key": ev.get("object_key"),
                    "seq_hashes": ev["seq_hashes"],
                    "block_hashes": ev.get("block_hashes"),
                    "backend_id": ev["backend_id"],
                    "tenant_id": ev["tenant_id"],
                    "medium": ev["medium"],
                    "timestamp_is_batch": ev["timestamp"] == batch[0],
                    "keys": len(ev),
                }), flush=True)
            if ev["event_type"] == "stored" and ev.get("object_key") == a.end_key:
                end = True
        if end:
            print(json.dumps({"done": True, **summary}), flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
