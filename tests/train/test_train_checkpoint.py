import logging

import pytest
import torch

from netcompress.core.errors import CheckpointError, ConfigError, OutputExistsError
from netcompress.core.io import safe_torch_load
from netcompress.train import Callback, Trainer, TrainConfig

CFG = TrainConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, scheduler="cosine", progress=False)


class ScheduledL1(Callback):
    """Stateful like a pruning schedule: the penalty grows with the steps it has counted, so a
    resume that forgot this state would train differently."""

    def __init__(self):
        self.count = 0

    def extra_loss(self, trainer, inputs, outputs, targets):
        return 1e-3 * self.count * trainer.model[0].weight.abs().sum()

    def on_step_end(self, trainer, step, loss):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step, loss):
        if step == self.step:
            raise Crash


class CountBatches(Callback):
    def __init__(self):
        self.batches = 0

    def on_batch_start(self, trainer, inputs, targets):
        self.batches += 1


def _files(path):
    return sorted(p.name for p in path.iterdir())


class NumpyMetric(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        import numpy as np
        metrics["sparsity"] = np.float64(0.5)
        metrics["norm"] = trainer.model[0].weight.norm()


def test_checkpoint_content(tmp_path, make_data, make_model):
    model, cb = make_model(), ScheduledL1()
    trainer = Trainer(model, make_data(n=64), CFG, val_data=make_data(n=32),
                      callbacks=[cb, NumpyMetric()], checkpoint_dir=tmp_path / "run")
    history = trainer.fit()
    assert _files(tmp_path / "run") == ["last.pt"]  # no temporary file left behind
    ckpt = safe_torch_load(tmp_path / "run" / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 3 * 4 == trainer.global_step
    assert ckpt["history"] == history and ckpt["config"] == CFG.to_dict()
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    assert ckpt["optimizer"]["state"] and ckpt["scheduler"]["last_epoch"] == 12
    assert ckpt["callbacks"] == [{"name": "ScheduledL1", "state": {"count": 12}},
                                 {"name": "NumpyMetric", "state": {}}]
    assert type(ckpt["history"][0]["sparsity"]) is float and type(history[0]["norm"]) is float
    assert set(ckpt["rng"]) == {"torch", "python", "numpy"}


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, make_data, make_model, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(make_model(), make_data(n=64), CFG, checkpoint_dir=run)
    real_save = torch.save

    class FailOnSecondEpoch(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 1:
                def broken(obj, path):
                    with open(path, "wb") as fh:
                        fh.write(b"PK\x03\x04 half a file")
                    raise OSError("disk full")
                monkeypatch.setattr(torch, "save", broken)

    trainer.callbacks.append(FailOnSecondEpoch())
    with pytest.raises(CheckpointError, match="disk full"):
        trainer.fit()
    monkeypatch.setattr(torch, "save", real_save)
    assert _files(run) == ["last.pt"]
    assert safe_torch_load(run / "last.pt")["epoch"] == 0


def test_corrupt_or_truncated_checkpoint(tmp_path, make_data, make_model):
    run = tmp_path / "run"
    Trainer(make_model(), make_data(n=64), CFG.replace(epochs=1), checkpoint_dir=run).fit()
    good = (run / "last.pt").read_bytes()
    for damaged in (good[: len(good) // 2], b"garbage" * 10, b""):
        (run / "last.pt").write_bytes(damaged)
        with pytest.raises(CheckpointError) as info:
            Trainer(make_model(), make_data(n=64), CFG.replace(epochs=1), checkpoint_dir=run,
                    resume=True)
        assert str(run / "last.pt") in str(info.value)
        assert "re-create" in str(info.value) or "start a new run" in str(info.value)
    torch.save({"weight": torch.zeros(2)}, run / "last.pt")  # a plain state_dict, not a run
    with pytest.raises(CheckpointError, match="not a netcompress trainer checkpoint"):
        Trainer(make_model(), make_data(n=64), CFG, checkpoint_dir=run, resume=True)


def test_refuses_to_overwrite_a_previous_run(tmp_path, make_data, make_model):
    run = tmp_path / "run"
    Trainer(make_model(), make_data(n=64), CFG.replace(epochs=1), checkpoint_dir=run).fit()
    before = (run / "last.pt").read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        Trainer(make_model(), make_data(n=64), CFG, checkpoint_dir=run)
    assert (run / "last.pt").read_bytes() == before
    trainer = Trainer(make_model(), make_data(n=64), CFG, checkpoint_dir=run, overwrite=True)
    trainer.fit()
    assert safe_torch_load(run / "last.pt")["epoch"] == 2 and len(trainer.history) == 3


def test_resume_needs_a_dir_and_warns_when_nothing_to_resume(tmp_path, make_data, make_model, caplog):
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        Trainer(make_model(), make_data(), CFG, resume=True)
    with caplog.at_level(logging.WARNING, logger="netcompress.train"):
        trainer = Trainer(make_model(), make_data(n=64), CFG, checkpoint_dir=tmp_path / "new",
                          resume=True)
    assert any("starting a fresh run" in r.getMessage() for r in caplog.records)
    assert len(trainer.fit()) == 3


def test_resuming_a_finished_run_returns_its_history(tmp_path, make_data, make_model, helpers):
    run = tmp_path / "run"
    model = make_model()
    history = Trainer(model, make_data(n=64), CFG, checkpoint_dir=run).fit()
    fresh, counter = make_model(seed=5), CountBatches()
    (run / ".last.pt.abc123.tmp").write_bytes(b"half")  # as if killed while writing
    again = Trainer(fresh, make_data(n=64), CFG, checkpoint_dir=run, resume=True, callbacks=[counter])
    assert again.fit() == history and counter.batches == 0
    assert _files(run) == ["last.pt"]
    assert all(torch.equal(a, b) for a, b in zip(helpers.weights(model).values(),
                                                 helpers.weights(fresh).values()))


def test_crash_and_resume_equals_uninterrupted(tmp_path, make_data, make_model, helpers):
    data, val = make_data(n=64), make_data(n=32, seed=1)
    ref_model = make_model(dropout=0.2)
    ref = Trainer(ref_model, data, CFG, val_data=val, callbacks=[ScheduledL1(), CountBatches()])
    ref_history = ref.fit()

    run = tmp_path / "run"
    crashing = [ScheduledL1(), CrashAt(step=6)]  # mid-way through the second epoch
    with pytest.raises(Crash):
        Trainer(make_model(dropout=0.2), data, CFG, val_data=val, callbacks=crashing,
                checkpoint_dir=run).fit()
    torch.rand(123)  # the crash left the global RNG elsewhere; resume must restore it
    schedule = ScheduledL1()
    model = make_model(seed=9, dropout=0.2)  # different init: weights must come from the checkpoint
    resumed = Trainer(model, data, CFG, val_data=val, callbacks=[schedule, CountBatches()],
                      checkpoint_dir=run, resume=True)
    assert resumed.epoch == 1 and resumed.global_step == 4 and schedule.count == 4
    history = resumed.fit()
    assert helpers.strip_time(history) == helpers.strip_time(ref_history)
    assert schedule.count == 12
    ref_w, w = helpers.weights(ref_model), helpers.weights(model)
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)


def test_resume_refuses_a_different_run(tmp_path, make_data, make_model):
    run = tmp_path / "run"
    Trainer(make_model(), make_data(n=64), CFG.replace(epochs=1), callbacks=[ScheduledL1()],
            checkpoint_dir=run).fit()
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.05 vs now 0.1"):
        Trainer(make_model(), make_data(n=64), CFG.replace(lr=0.1), callbacks=[ScheduledL1()],
                checkpoint_dir=run, resume=True)
    with pytest.raises(CheckpointError, match=r"state for callbacks \['ScheduledL1'\]"):
        Trainer(make_model(), make_data(n=64), CFG.replace(epochs=1), checkpoint_dir=run, resume=True)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        Trainer(make_model(hidden=8), make_data(n=64), CFG.replace(epochs=1), callbacks=[ScheduledL1()],
                checkpoint_dir=run, resume=True)
    # harmless fields may change
    t = Trainer(make_model(), make_data(n=64), CFG.replace(epochs=1, progress=True, eval_batch_size=7),
                callbacks=[ScheduledL1()], checkpoint_dir=run, resume=True)
    assert t.epoch == 1
