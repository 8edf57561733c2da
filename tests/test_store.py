"""No result is ever lost or half-written: a writer killed mid-write leaves the old record intact."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from click.testing import CliRunner

from harness.cli import main
from harness.store import ResultStore, atomic_write_json


def test_atomic_write_roundtrip(tmp_path):
    store = ResultStore(tmp_path / "sweep")
    store.write({"id": "abc", "status": "ok", "metrics": {"top1": 50.0}})
    assert store.read("abc")["metrics"]["top1"] == 50.0
    assert [r["id"] for r in store.records()] == ["abc"]
    assert store.leftover_temp_files() == []


def _killed_writer(tmp_path, stall_in: str):
    """Start a child that writes a record and stalls (a) half-way through the data or (b) right
    before the rename; kill it with SIGKILL there."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from harness.store import ResultStore
        stall = {stall_in!r}
        if stall == "fsync":
            os.fsync = lambda fd: (print("STALLED", flush=True), time.sleep(60))
        else:  # the temp file gets half the data, then the writer stalls
            import builtins
            real_open = builtins.open
            class HalfThenStall:
                def __init__(self, f): self.f = f
                def __enter__(self): return self
                def __exit__(self, *exc): self.f.close()
                def write(self, text):
                    self.f.write(text[: len(text) // 2]); self.f.flush()
                    print("STALLED", flush=True); time.sleep(60)
                def flush(self): self.f.flush()
                def fileno(self): return self.f.fileno()
            def patched_open(path, mode="r", *a, **k):
                f = real_open(path, mode, *a, **k)
                return HalfThenStall(f) if str(path).endswith(".tmp") and "w" in mode else f
            builtins.open = patched_open
        ResultStore(sys.argv[1]).write({{"id": "cell1", "status": "ok", "version": 2, "metrics": {{"top1": 99.0}}, "pad": "x" * 200000}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "sweep")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "STALLED"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_writer_killed_mid_write_leaves_previous_record(tmp_path):
    store = ResultStore(tmp_path / "sweep")
    store.write({"id": "cell1", "status": "ok", "version": 1, "metrics": {"top1": 10.0}})
    for stall in ("write", "fsync"):
        _killed_writer(tmp_path, stall)
        record = store.read("cell1")
        assert record["version"] == 1 and record["metrics"]["top1"] == 10.0  # old record, complete
        for path in store.folder.glob("*.json"):
            json.loads(path.read_text())  # every visible record parses
        assert [r["id"] for r in store.records()] == ["cell1"]
    leftovers = store.leftover_temp_files()
    assert len(leftovers) == 2 and leftovers[0].stat().st_size > 0  # the partial data went to a temp file only
    result = CliRunner().invoke(main, ["results", "clean", str(store.folder)])
    assert result.exit_code == 0 and "removed 2 temp file(s)" in result.output
    assert store.leftover_temp_files() == []


def test_writer_killed_before_first_record_leaves_no_record(tmp_path):
    _killed_writer(tmp_path, "write")
    store = ResultStore(tmp_path / "sweep")
    assert store.read("cell1") is None and list(store.records()) == []
    # a rerun writes the record in full
    atomic_write_json(store.path_for("cell1"), {"id": "cell1", "status": "ok"})
    assert store.status("cell1") == "ok"
