"""Reads wandb's offline run files (``run-*.wandb``) back: a LevelDB-style log of protobuf Records.

Format: a 7-byte header (':W&B', magic, version), then 32 KiB blocks of chunks, each with a
7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, chunks, buf = 7, [], b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            chunks.append(buf + chunk)
    records = []
    for raw in chunks:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def summarise_run(path: Path) -> dict:
    """config, group, job_type, tags, history rows and the final summary of one offline run."""
    out = {"config": {}, "history": [], "summary": {}, "group": None, "job_type": None, "tags": []}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(group=rec.run.run_group, job_type=rec.run.job_type, tags=list(rec.run.tags))
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update if u.key})
        elif kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in rec.summary.update})
    return out
