"""Data-parallel training under torchrun reproduces the one-process run."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from netcompress.train import is_distributed, rank, world_size
from netcompress.train.distributed import EpochSampler

SRC = str(Path(__file__).resolve().parents[2] / "src")
TORCHRUN = Path(sys.executable).parent / "torchrun"

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import TensorDataset
    from netcompress.train import (Trainer, TrainConfig, init_distributed, is_distributed, rank,
                                   world_size)

    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 12, generator=g)
    y = (x @ torch.randn(12, 4, generator=g)).argmax(1)
    train, val = TensorDataset(x[:256], y[:256]), TensorDataset(x[256:], y[256:])  # 256 = 8 x 32
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.1, momentum=0.9, scheduler="cosine",
                      progress=False)
    trainer = Trainer(model, train, cfg, val_data=val, checkpoint_dir=out / f"ckpt{rank()}")
    history = trainer.fit()
    pg_left = dist.is_initialized()
    # a second trainer re-creates the group (train, prune, fine-tune in one script)
    again = Trainer(nn.Linear(12, 4), train, cfg.replace(epochs=1)).fit()
    # a group the caller created survives fit()
    created = init_distributed()
    Trainer(nn.Linear(12, 4), train, cfg.replace(epochs=1)).fit()
    kept = is_distributed() and world_size() == 2
    if dist.is_initialized():
        dist.destroy_process_group()
    torch.save({"model": model.state_dict(), "history": history, "world": trainer.world_size,
                "steps": trainer.steps_per_epoch, "pg_left": pg_left, "created": created,
                "again": again,
                "kept": kept, "rank": rank(), "is_main": trainer.is_main}, out / f"rank{rank()}.pt")
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_helpers_outside_a_process_group(monkeypatch):
    for var in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert (is_distributed(), rank(), world_size()) == (False, 0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert (is_distributed(), rank(), world_size()) == (False, 2, 4)  # torchrun env, no group yet


def test_rank_shards_make_up_the_one_process_batches(make_data):
    data, batch, world = make_data(n=96), 16, 2
    single = EpochSampler(data, seed=4)
    shards = [EpochSampler(data, num_replicas=world, rank=r, seed=4) for r in range(world)]
    for s in [single, *shards]:
        s.set_epoch(3)
    order = list(single)
    per_rank = [list(s) for s in shards]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(96))
    step = batch // world
    for k in range(96 // batch):
        global_batch = set(per_rank[0][k * step:(k + 1) * step] + per_rank[1][k * step:(k + 1) * step])
        assert global_batch == set(order[k * batch:(k + 1) * batch])


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_torchrun_two_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    ddp = subprocess.Popen(
        [str(TORCHRUN), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
         str(script), str(tmp_path / "ddp")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    try:
        _, err = ddp.communicate(timeout=120)
    finally:
        if ddp.poll() is None:  # hung: kill torchrun and both workers (its own session)
            os.killpg(ddp.pid, signal.SIGKILL)
            ddp.communicate()
    assert ddp.returncode == 0, err[-3000:]

    one = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert (one["world"], one["steps"], one["created"]) == (1, 8, False)
    assert (r0["world"], r0["steps"], r0["rank"], r0["is_main"]) == (2, 8, 0, True)
    assert (r1["rank"], r1["is_main"]) == (1, False)
    assert not r0["pg_left"] and not r1["pg_left"]  # the trainer destroyed the group it created
    assert r0["created"] and r0["kept"] and r1["kept"]  # ...but not one init_distributed() made
    assert [m["train_loss"] for m in r0["again"]] == [m["train_loss"] for m in r1["again"]]
    for key, value in one["model"].items():
        assert torch.equal(r0["model"][key], r1["model"][key]), key  # ranks stay in sync
        diff = float((r0["model"][key] - value).abs().max())
        assert diff <= 1e-4, (key, diff)
        print(f"{key}: max abs diff {diff:.2e}")
    for a, b in zip(r0["history"], one["history"], strict=True):
        assert a["train_accuracy"] == b["train_accuracy"]
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
    # only rank 0 wrote the checkpoint, and it holds the final weights
    assert not (tmp_path / "ddp" / "ckpt1" / "last.pt").exists()
    ckpt = torch.load(tmp_path / "ddp" / "ckpt0" / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in r0["model"].items())
