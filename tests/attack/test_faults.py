"""Faults: a second writer of one run directory (in-process, and across real processes), a killed writer's
lock, a full disk (a 1 MB tmpfs when this runs as root, else ENOSPC simulated by patching fsync), failed
exports, corrupt checkpoints under --resume, temporary files left by a killed process."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from netcompress.core.errors import NetcompressError
from netcompress.recipe.runner import RunLock
from tests.attack.harness import TINY, copy_run, refused

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------- concurrency

def test_held_lock_refuses_a_second_writer_then_frees(sandbox):
    recipe = sandbox.recipe(TINY)
    out = sandbox.root / "run"
    out.mkdir()
    lock = RunLock(out).acquire()  # another open file description: flock conflicts even in one process
    try:
        refused(sandbox.run(["compress", recipe, "--out", out, "--no-progress"], out=out),
                "another netcompress process", f"pid {os.getpid()}")
        assert sorted(p.name for p in out.iterdir()) == [".netcompress-lock"]
    finally:
        lock.release()
    result = sandbox.run(["compress", recipe, "--out", out, "--no-progress"], out=out)
    assert result.code == 0, result.err  # a lock file nobody holds blocks nothing


@pytest.mark.parametrize("flag", ["--resume", "--force"])
def test_locked_finished_run_is_neither_resumed_nor_replaced(sandbox, finished_run, flag):
    recipe, run = copy_run(finished_run, sandbox)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    lock = RunLock(run).acquire()
    try:
        refused(sandbox.run(["compress", recipe, "--out", run, flag, "--no-progress"], out=run),
                "another netcompress process")
    finally:
        lock.release()
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_lock_held_by_another_process_then_killed(sandbox, finished_run):
    """The holder is a real process; SIGKILLed, its lock is gone and the resume runs."""
    recipe, run = copy_run(finished_run, sandbox)
    holder = subprocess.Popen(  # what RunLock does, in a process that starts fast (no torch import)
        [sys.executable, "-c", "import fcntl, os, time\n"
         f"fd = os.open({str(run / '.netcompress-lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nos.ftruncate(fd, 0)\nos.write(fd, b'%d' % os.getpid())\n"
         "print('locked', flush=True)\ntime.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(sandbox.run(["compress", recipe, "--out", run, "--resume", "--no-progress"], out=run),
                f"pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    result = sandbox.run(["compress", recipe, "--out", run, "--resume", "--no-progress"], out=run)
    assert result.code == 0, result.err


def test_second_writer_while_a_real_run_is_writing(sandbox):
    """A real run (a subprocess) is training; a --resume of the same directory meanwhile is refused with one
    line, and the run's events are written once (no second writer interleaving epochs)."""
    epochs = 150
    spec = {**TINY, "model": {**TINY["model"], "pretrain": {"epochs": epochs, "lr": 0.1}}}
    recipe = sandbox.recipe(spec)
    out = sandbox.root / "run"
    first = subprocess.Popen([sys.executable, "-m", "netcompress", "compress", str(recipe), "--out", str(out),
                              "--no-progress"], env=ENV, cwd=sandbox.root, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        events = out / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (events.exists() and '"epoch"' in events.read_text()) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused(sandbox.run(["compress", recipe, "--out", out, "--resume", "--no-progress"], out=out),
                f"another netcompress process (pid {first.pid})")
    finally:
        code = first.wait(timeout=300)
    assert code == 0, first.stderr.read()
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert sum(e["event"] == "epoch" for e in logged) == epochs + 1  # pretrain + fine-tune, each epoch once


# --------------------------------------------------------------------------------------------- full disk

@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 1 MB tmpfs (root only); elsewhere ENOSPC is simulated: fsync of a file under the folder fails."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    if not mounted:
        real_fsync = os.fsync

        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(mnt)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr("netcompress.core.io.os.fsync", fsync)
    yield mnt
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _no_temp_files(folder: Path):
    left = [p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".tmp.data"))]
    assert not left, left


def test_disk_full_export(sandbox, small_disk):
    out = small_disk / "m.onnx"
    line = refused(sandbox.run(["export", "--model", "lenet_300_100", "--out", out], out=small_disk),
                   "disk full (ENOSPC)", str(out))
    assert "callback" not in line and not out.exists()
    _no_temp_files(small_disk)


def test_disk_full_train_out(sandbox, small_disk):
    out = small_disk / "w.safetensors"
    refused(sandbox.run(["train", "--model", "mlp_1200_1200", "--data", "digits", "--epochs", "0", "--out", out],
                        out=small_disk), "disk full (ENOSPC)", str(out))
    assert not out.exists()
    _no_temp_files(small_disk)


@pytest.mark.parametrize("where", ["baseline", "trainer-checkpoint"])
def test_disk_full_during_a_run(sandbox, small_disk, where):
    """Whoever writes (the runner, or the trainer's checkpoint, which wraps the error), the line says disk full."""
    pretrain = {"epochs": 1, "lr": 0.1} if where == "trainer-checkpoint" else None
    spec = {**TINY, "model": {"name": "mlp_1200_1200", "pretrain": pretrain},
            "data": {**TINY["data"], "train_subset": 64}}
    out = small_disk / "run"
    line = refused(sandbox.run(["compress", sandbox.recipe(spec), "--out", out, "--no-progress"], out=small_disk),
                   "disk full (ENOSPC)")
    assert "callback" not in line and "state_dict" not in line
    _no_temp_files(small_disk)


# ------------------------------------------------------------------------------------------ failed exports

def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from netcompress.export import onnx as onnx_mod
    from netcompress.export.onnx import ExportError, to_onnx
    from netcompress.models import mlp

    model = mlp(input_size=8, hidden=(8,))

    def disagree(*a, **k):
        raise ExportError("onnxruntime disagrees with torch (simulated)")

    monkeypatch.setattr(onnx_mod, "check_onnx", disagree)
    with pytest.raises(ExportError):
        to_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
    (tmp_path / "m.onnx").write_bytes(b"the previous export")
    with pytest.raises(ExportError):
        to_onnx(model, torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx", force=True)
    assert os.listdir(tmp_path) == ["m.onnx"] and (tmp_path / "m.onnx").read_bytes() == b"the previous export"


def test_nan_model_export_names_the_tensor(tmp_path):
    from netcompress.export.onnx import ExportError, to_onnx
    from netcompress.models import lenet_300_100

    model = lenet_300_100()
    with torch.no_grad():
        model.net[3].weight[0, 0] = float("nan")
    with pytest.raises(ExportError, match=r"net\.3\.weight \(1 of 30000\)") as info:
        to_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    assert "disagrees" not in str(info.value) and os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------- resume after a crash

class Crash(BaseException):
    """Stands in for SIGKILL in-process."""


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """TINY with 3 fine-tune epochs, killed in the second: a directory --resume continues."""
    from netcompress.recipe import run_recipe
    from netcompress.recipe.context import RunContext

    tmp = tmp_path_factory.mktemp("crashed")
    spec = {**TINY, "stages": [{"type": "fine-tune", "epochs": 3, "lr": 0.05}, *TINY["stages"][1:]]}
    recipe = tmp / "r.yaml"
    recipe.write_text(yaml.safe_dump(spec, sort_keys=False))
    original = RunContext.log_event

    seen = []

    def crash(self, event, **fields):  # the second epoch's event: the first epoch's checkpoint is on disk
        original(self, event, **fields)
        seen.extend([1] if event == "epoch" and fields.get("stage") == "01-fine-tune" else [])
        if len(seen) == 2:
            raise Crash

    RunContext.log_event = crash
    try:
        with pytest.raises(Crash):
            run_recipe(recipe, tmp / "run", progress=False)
    finally:
        RunContext.log_event = original
    return recipe, tmp / "run"


def test_corrupt_epoch_checkpoint_names_a_fix_that_exists(sandbox, crashed_run):
    recipe, run = copy_run(crashed_run, sandbox)
    last = run / "checkpoints" / "01-fine-tune" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    line = refused(sandbox.run(["compress", recipe, "--out", run, "--resume"], out=run), str(last),
                   "delete it and --resume again")
    assert "point to another file" not in line
    last.unlink()  # the fix the line names
    result = sandbox.run(["compress", recipe, "--out", run, "--resume", "--no-progress"], out=run)
    assert result.code == 0, result.err


def test_corrupt_baseline_says_start_over(sandbox, crashed_run):
    recipe, run = copy_run(crashed_run, sandbox)
    base = run / "checkpoints" / "baseline.safetensors"
    base.write_bytes(b"\x00" * 10)
    refused(sandbox.run(["compress", recipe, "--out", run, "--resume"], out=run), str(base), "--force")


def test_resume_removes_temporary_files_a_killed_process_left(sandbox, crashed_run):
    recipe, run = copy_run(crashed_run, sandbox)
    for stale in (run / ".run.json.abc123.tmp", run / "checkpoints" / ".last.pt.x1.tmp",
                  run / "artifacts" / ".model.onnx.q9.tmp.data"):
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"partial")
    result = sandbox.run(["compress", recipe, "--out", run, "--resume", "--no-progress"], out=run)
    assert result.code == 0, result.err
    _no_temp_files(run)


def test_every_error_is_a_netcompress_error():
    """The classes the CLI turns into one line: new error kinds derive from NetcompressError."""
    from netcompress.core import errors

    for name in ("OutputError", "DiskFullError", "RunLockedError"):
        assert issubclass(getattr(errors, name), NetcompressError)


@pytest.mark.parametrize("resume", [True, False])
def test_train_checkpoint_dir_with_a_corrupt_checkpoint(sandbox, resume):
    ck = sandbox.root / "ck"
    ck.mkdir()
    (ck / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    argv = ["train", "--model", "mlp", "--data", "digits", "--out", "w.safetensors", "--checkpoint-dir", ck]
    line = refused(sandbox.run(argv + (["--resume"] if resume else [])), str(ck / "last.pt"))
    assert ("delete it to start the training over" if resume else "pass --resume") in line
    assert "point to another file" not in line and not (sandbox.root / "w.safetensors").exists()
