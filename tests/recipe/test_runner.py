"""Running recipes: run directory contents, overwrite refusal, kill-and-resume, the prune stage, trust."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from netcompress.core.config import Fraction
from netcompress.core.errors import ConfigError, OutputExistsError
from netcompress.prune import PruneConfig
from netcompress.recipe import parse_recipe, run_recipe

torch.set_num_threads(1)  # tiny models; the machine is shared

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "tiny", "seed": 0,
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}, "pretrain": {"epochs": 2, "lr": 0.1, "batch_size": 64}},
        "data": {"name": "digits", "image_size": 8, "train_subset": 640},
        "stages": [{"type": "fine-tune", "epochs": 2, "lr": 0.02, "batch_size": 64},
                   {"type": "export", "formats": ["safetensors"]}],
        "measure": {"latency_repeats": 3, "latency_warmup": 0, "batch_sizes": [1]}}
DETERMINISTIC = ("accuracy", "params", "nonzero_params", "macs", "bytes_on_disk")


def write(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def same_results(a, b):
    for block in ("baseline", "final"):
        for key in DETERMINISTIC:
            assert a[block][key] == b[block][key], (block, key, a[block][key], b[block][key])
    assert [{k: p[k] for k in ("stage", "accuracy", "nonzero_params")} for p in a["stages"]] == \
           [{k: p[k] for k in ("stage", "accuracy", "nonzero_params")} for p in b["stages"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    return run_recipe(write(tmp, TINY), tmp / "run", progress=False), tmp / "run"


def test_run_directory_holds_everything(reference):
    metrics, run = reference
    for name in ("recipe.yaml", "run.json", "log.txt", "metrics.jsonl", "metrics.json", "report.html", "report.md",
                 "checkpoints/baseline.safetensors", "checkpoints/01-fine-tune.pt",
                 "checkpoints/01-fine-tune/last.pt", "artifacts/model.safetensors"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "metrics.json").read_text())
    for block in ("baseline", "final"):
        assert set(on_disk[block]) >= {"accuracy", "params", "nonzero_params", "macs", "bytes_on_disk", "latency_ms"}
    assert on_disk["final"]["bytes_on_disk"] == (run / "artifacts/model.safetensors").stat().st_size
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "epoch" for e in events) == 4  # 2 baseline + 2 fine-tune epochs
    assert metrics["final"]["accuracy"] > 0.5 and metrics["baseline"]["accuracy"] > 0.5
    page = (run / "report.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page and "src=\"http" not in page
    assert "| accuracy |" in (run / "report.md").read_text()
    assert "stage 01-fine-tune: start" in (run / "log.txt").read_text()


def test_existing_run_directory_is_never_overwritten_without_force(reference, tmp_path):
    _, run = reference
    before = (run / "metrics.json").read_bytes()
    with pytest.raises(OutputExistsError, match="--resume.*--force"):
        run_recipe(write(tmp_path, TINY), run)
    assert (run / "metrics.json").read_bytes() == before
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not created by netcompress"):
        run_recipe(write(tmp_path, TINY), other, force=True)
    assert (other / "precious.txt").read_text() == "keep"
    (other / "run.json").write_text('{"format": "netcompress.run/1"}')  # a file name proves nothing
    with pytest.raises(OutputExistsError, match="not created by netcompress"):
        run_recipe(write(tmp_path, TINY), other, force=True)
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt", "run.json"]


def test_resume_refuses_a_different_recipe(reference, tmp_path):
    from netcompress.core.errors import CheckpointError

    _, run = reference
    changed = {**TINY, "seed": 1}
    with pytest.raises(CheckpointError, match="different recipe"):
        run_recipe(write(tmp_path, changed), run, resume=True)


def _kill_when(cmd, run, trigger, env):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - start < 120:
            log = run / "metrics.jsonl"
            lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
            if trigger(lines, time.monotonic() - start):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


# where the process is killed: mid pretraining, mid fine-tuning, between stages
KILL_POINTS = {
    "pretrain-epoch-1": lambda ev, t: any(e["event"] == "epoch" and e["stage"] == "baseline" and e["epoch"] == 1
                                          for e in ev),
    "fine-tune-epoch-0": lambda ev, t: any(e["event"] == "epoch" and e["stage"] == "01-fine-tune" for e in ev),
    "after-fine-tune": lambda ev, t: any(e["event"] == "stage_end" and e["stage"] == "01-fine-tune" for e in ev),
}


def test_sigkill_then_resume_gives_the_same_final_metrics(reference, tmp_path):
    """The real thing: the CLI in a subprocess, SIGKILLed in the middle of fine-tuning."""
    recipe = write(tmp_path, TINY)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "netcompress", "compress", str(recipe), "--out", str(run), "--no-progress"]
    assert _kill_when(cmd, run, KILL_POINTS["fine-tune-epoch-0"], env) == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    resumed = run_recipe(recipe, run, resume=True, progress=False)
    same_results(resumed, reference[0])


class Crash(BaseException):
    """Stands in for SIGKILL in-process (a BaseException, so nothing catches it on the way out)."""


@pytest.mark.parametrize("point", ["pretrain-epoch-1", "after-fine-tune"])
def test_crash_at_other_points_then_resume(reference, tmp_path, monkeypatch, point):
    from netcompress.recipe.context import RunContext

    recipe = write(tmp_path, TINY)
    run = tmp_path / "run"
    original = RunContext.log_event
    events = []

    def log_then_crash(self, event, **fields):
        original(self, event, **fields)
        events.append({"event": event, **fields})
        if KILL_POINTS[point](events, 0.0):
            raise Crash(point)

    monkeypatch.setattr(RunContext, "log_event", log_then_crash)
    with pytest.raises(Crash):
        run_recipe(recipe, run, progress=False)
    monkeypatch.setattr(RunContext, "log_event", original)
    same_results(run_recipe(recipe, run, resume=True, progress=False), reference[0])


def test_factory_model_spec_is_restricted(tmp_path):
    untrusted = {**TINY, "model": {"factory": "os.path:join"}}
    with pytest.raises(ConfigError, match="not trusted.*--trust os"):
        run_recipe(write(tmp_path, untrusted), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    private = {**TINY, "model": {"factory": "netcompress.models.zoo:_resnet"}}
    with pytest.raises(ConfigError, match="private"):
        parse_recipe(private)
    imported = {**TINY, "model": {"factory": "netcompress.models:Path"}}  # not defined in that module
    with pytest.raises(ConfigError):
        run_recipe(write(tmp_path, imported), tmp_path / "run2", trusted=("netcompress",))


def test_factory_model_from_a_trusted_package(tmp_path):
    spec = {**TINY, "model": {"factory": "netcompress.models.zoo:mlp",
                              "kwargs": {"input_size": 8, "hidden": [16]}, "pretrain": {"epochs": 1}},
            "stages": [{"type": "fine-tune", "epochs": 1}]}
    metrics = run_recipe(write(tmp_path, spec), tmp_path / "run", progress=False)
    assert metrics["final"]["params"] == 64 * 16 + 16 + 16 * 10 + 10


@dataclass(frozen=True)
class ZeroSmallest(PruneConfig):
    """A user's own pruning config: zero the smallest-|w| fraction of every Linear through a mask."""

    sparsity: Fraction = 0.5


class _Mask(torch.nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


@pytest.fixture
def zero_smallest():
    from torch.nn.utils import parametrize

    from netcompress.prune import PRUNE

    @PRUNE.register(ZeroSmallest)
    def apply(model, config, report, *, data=None, **kw):
        assert data is not None and len(data) > 0
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                w = m.weight.detach().abs()
                k = int(config.sparsity * w.numel())
                mask = (w > w.flatten().kthvalue(k).values).float() if k else torch.ones_like(w)
                parametrize.register_parametrization(m, "weight", _Mask(mask))

    yield
    PRUNE._by_type.pop(ZeroSmallest)


def test_prune_stage_through_prune_and_resume_restores_masks(zero_smallest, tmp_path):
    spec = {**TINY, "stages": [{"type": "prune", "config": {"type": "ZeroSmallest", "sparsity": 0.75}},
                               {"type": "fine-tune", "epochs": 1, "lr": 0.02}]}
    with pytest.raises(Exception, match=r"stages\[0\].config.sparsity must be a number in \[0, 1\)"):
        parse_recipe({**spec, "stages": [{"type": "prune", "config": {"type": "ZeroSmallest", "sparsity": 2}}]})
    with pytest.raises(Exception, match="Did you mean 'sparsity'"):
        parse_recipe({**spec, "stages": [{"type": "prune", "config": {"type": "ZeroSmallest", "sparsty": 0.5}}]})
    path = write(tmp_path, spec)
    first = run_recipe(path, tmp_path / "run", progress=False)
    weights = first["final"]["params"] - (32 + 10)  # biases are not pruned
    assert first["final"]["nonzero_params"] <= first["final"]["params"] - int(0.75 * weights) + 2
    # resume a finished run: stages are restored (masks re-created), not re-run, with the same result
    again = run_recipe(path, tmp_path / "run", resume=True, progress=False)
    same_results(again, first)


def test_torchrun_two_processes_match_one_process(reference, tmp_path):
    """``torchrun --nproc_per_node=2 -m netcompress compress``: DDP (gloo) fine-tuning, same result."""
    from netcompress.core.io import load_weights

    recipe = write(tmp_path, TINY)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    proc = subprocess.run(torchrun + ["-m", "netcompress", "compress", str(recipe), "--out", str(run), "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("report:") == 1  # only rank 0 prints and writes
    ddp = json.loads((run / "metrics.json").read_text())
    one, two = reference[0], ddp
    for block in ("baseline", "final"):
        assert abs(one[block]["accuracy"] - two[block]["accuracy"]) <= 2 / one["n_test"] + 1e-12
    a = load_weights(reference[1] / "artifacts" / "model.safetensors")
    b = load_weights(run / "artifacts" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4  # all-reduce order: float rounding only
