"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parents[2] / "src")

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from netcompress.train import Callback, Trainer, TrainConfig

    run_dir, out, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    torch.set_num_threads(1)

    class Schedule(Callback):  # stateful, like a pruning schedule
        def __init__(self):
            self.count = 0
        def extra_loss(self, trainer, inputs, outputs, targets):
            return 1e-4 * self.count * trainer.model[0].weight.abs().sum()
        def on_step_end(self, trainer, step, loss):
            self.count += 1
        def state_dict(self):
            return {"count": self.count}
        def load_state_dict(self, state):
            self.count = state["count"]

    class Stall(Callback):  # lets the parent kill us a few steps into the second epoch
        def on_step_end(self, trainer, step, loss):
            if mode == "stall" and step == trainer.steps_per_epoch + 3:
                (run_dir / "marker").write_text(str(step))
                time.sleep(120)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x @ torch.randn(10, 4, generator=g)).argmax(1)
    train, val = TensorDataset(x[:192], y[:192]), TensorDataset(x[192:], y[192:])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, scheduler="cosine",
                      weight_decay=1e-4, progress=False)
    trainer = Trainer(model, train, cfg, val_data=val, callbacks=[Schedule(), Stall()],
                      checkpoint_dir=run_dir, resume=(mode == "resume"))
    start = trainer.epoch
    history = trainer.fit()
    torch.save({"model": model.state_dict(), "history": history, "start": start,
                "count": trainer.callbacks[0].count}, out)
""")


def _run(script, run_dir, out, mode):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(run_dir), str(out), mode], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc, timeout=120):
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    killed_dir, ref_dir = tmp_path / "killed", tmp_path / "ref"
    killed_dir.mkdir()
    reference = _run(script, ref_dir, tmp_path / "ref.pt", "plain")  # runs alongside
    victim = _run(script, killed_dir, tmp_path / "never.pt", "stall")
    try:
        deadline = time.monotonic() + 90
        while not (killed_dir / "marker").exists():
            assert victim.poll() is None, victim.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the training subprocess never reached epoch 2"
            time.sleep(0.05)
        assert (killed_dir / "last.pt").exists()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()
    assert sorted(p.name for p in killed_dir.iterdir()) == ["last.pt", "marker"]

    _finish(_run(script, killed_dir, tmp_path / "resumed.pt", "resume"))
    _finish(reference)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    ref = torch.load(tmp_path / "ref.pt", weights_only=True)
    assert resumed["start"] == 1 and ref["start"] == 0  # really resumed after epoch 1
    assert resumed["count"] == ref["count"] == 36
    for key, value in ref["model"].items():
        assert torch.allclose(resumed["model"][key], value, rtol=0, atol=1e-6), key
    strip = lambda h: [{k: v for k, v in m.items() if k != "seconds"} for m in h]  # noqa: E731
    for a, b in zip(strip(resumed["history"]), strip(ref["history"]), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
