import io
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netcompress.core.errors import ConfigError, DataError, NetcompressError
from netcompress.train import Trainer, TrainConfig, evaluate
from netcompress.train.distributed import EpochSampler

CFG = TrainConfig(epochs=2, batch_size=16, lr=0.1, progress=False)
KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}


# ------------------------------------------------------------------------------------ evaluate

def _hand_model():
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))  # logits == inputs
    return model


ROWS = [([2.0, 0, 0], 0), ([0, 1.0, 0], 1), ([0, 0, 3.0], 0), ([1.0, 2.0, 0], 1), ([0, 1.0, 2.0], 0)]


def test_evaluate_matches_hand_computation():
    data = TensorDataset(torch.tensor([r for r, _ in ROWS]), torch.tensor([t for _, t in ROWS]))
    # predictions: 0, 1, 2, 1, 2 -> 3 of 5 right
    expected_loss = sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in ROWS) / 5
    for result in (evaluate(_hand_model(), data, batch_size=2),  # uneven last batch
                   evaluate(_hand_model(), DataLoader(data, batch_size=4))):
        assert result["n"] == 5
        assert result["accuracy"] == pytest.approx(0.6)
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_evaluate_soft_targets_and_custom_loss():
    x = torch.tensor([r for r, _ in ROWS])
    soft = F.one_hot(torch.tensor([t for _, t in ROWS]), 3).float()
    assert evaluate(_hand_model(), TensorDataset(x, soft))["accuracy"] == pytest.approx(0.6)
    mse = evaluate(_hand_model(), TensorDataset(x, x.clone()),
                   loss_fn=lambda o, t, i: F.mse_loss(o, t))
    assert mse["loss"] == pytest.approx(0.0) and mse["accuracy"] is None


class ModeProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, self.bn.training, torch.is_grad_enabled()))
        return self.bn(self.lin(x))


def test_evaluate_runs_in_eval_no_grad_and_restores_each_mode():
    data = TensorDataset(torch.randn(6, 3), torch.zeros(6, dtype=torch.long))
    model = ModeProbe()
    stats = model.bn.running_mean.clone()
    model.train()
    model.bn.eval()  # deliberately frozen BN inside a training model
    evaluate(model, data, batch_size=4)
    assert model.seen == [(False, False, False)] * 2
    assert model.training and not model.bn.training and model.lin.training
    model.eval()
    evaluate(model, data)
    assert not model.training
    assert torch.equal(model.bn.running_mean, stats)  # eval mode: BN statistics untouched


# --------------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_weights(make_data, make_model, helpers):
    data = make_data()
    runs = []
    for noise in (1, 7):
        model = make_model(dropout=0.3)
        torch.rand(noise)  # disturb the global RNG: the trainer must re-seed it
        history = Trainer(model, data, CFG, val_data=data).fit()
        runs.append((helpers.weights(model), helpers.strip_time(history)))
    (w1, h1), (w2, h2) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert h1 == h2
    other = make_model(dropout=0.3)
    Trainer(other, data, CFG.replace(seed=1)).fit()
    assert not torch.equal(other[0].weight, w1["0.weight"])


def test_epoch_order_depends_only_on_seed_and_epoch(make_data):
    data = make_data(n=50)
    a, b = EpochSampler(data, seed=3), EpochSampler(data, seed=3)
    a.set_epoch(0)
    first = list(a)
    a.set_epoch(5)
    list(a)
    b.set_epoch(5)
    assert list(a) == list(b) and sorted(first) == list(range(50))
    assert first != list(a)
    c, d = EpochSampler(data, seed=0), EpochSampler(data, seed=1)
    c.set_epoch(1)
    d.set_epoch(0)
    assert list(c) != list(d)  # unlike DistributedSampler's seed + epoch


# ---------------------------------------------------------------------------------- the loop

def test_history_and_val_metrics(make_data, make_model):
    train, val = make_data(n=96), make_data(n=40, seed=1)
    model = make_model()
    trainer = Trainer(model, train, CFG.replace(epochs=3), val_data=val)
    history = trainer.fit()
    assert len(history) == 3 and all(set(m) == KEYS for m in history)
    assert [m["epoch"] for m in history] == [0, 1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    final = evaluate(model, val)
    assert history[-1]["val_accuracy"] == final["accuracy"]
    assert history[-1]["val_loss"] == pytest.approx(final["loss"], rel=1e-6)
    assert trainer.fit() is history and len(history) == 3  # a second fit() does not train again


def test_optimizers_schedulers_and_passed_optimizer(make_data, make_model):
    data = make_data(n=64)
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                      ("adamw", torch.optim.AdamW)):
        assert type(Trainer(make_model(), data, CFG.replace(optimizer=name)).optimizer) is cls
    step = Trainer(make_model(), data, CFG.replace(epochs=3, scheduler="step", step_size=2, gamma=0.1))
    assert [m["lr"] for m in step.fit()] == pytest.approx([0.1, 0.1, 0.01])
    cosine = Trainer(make_model(), data, CFG.replace(scheduler="cosine"))
    cosine.fit()
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    onecycle = Trainer(make_model(), data, CFG.replace(scheduler="onecycle"))
    assert onecycle.fit()[0]["lr"] == pytest.approx(0.1 / 25)
    model = make_model()
    mine = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = Trainer(model, data, CFG, optimizer=mine)
    before = model[0].weight.detach().clone()
    trainer.fit()
    assert trainer.optimizer is mine and torch.equal(model[0].weight, before)  # lr 0: nothing moves


def test_label_smoothing_and_grad_clip(make_data, make_model):
    data = make_data(n=32)
    trainer = Trainer(make_model(), data, CFG.replace(label_smoothing=0.2))
    x, y = data.tensors
    out = trainer.model(x)
    assert torch.allclose(trainer.loss_fn(out, y, x), F.cross_entropy(out, y, label_smoothing=0.2))
    # one full-batch plain-SGD step moves the weights by at most lr * clip
    moves = {}
    for clip in (None, 0.01):
        model = make_model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        Trainer(model, data, CFG.replace(epochs=1, batch_size=32, lr=1.0, momentum=0.0,
                                         grad_clip=clip)).fit()
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        moves[clip] = float((after - before).norm())
    assert moves[0.01] == pytest.approx(0.01, rel=1e-4)
    assert moves[None] > 0.05


def test_non_finite_loss_stops_before_the_step(make_data, make_model):
    model = make_model()
    before = model[0].weight.detach().clone()
    trainer = Trainer(model, make_data(), CFG, loss_fn=lambda o, t, i: o.sum() * float("nan"))
    with pytest.raises(NetcompressError, match="lr="):
        trainer.fit()
    assert torch.equal(model[0].weight, before)


def test_bad_inputs(make_data, make_model):
    data = make_data(n=8)
    with pytest.raises(DataError, match="empty"):
        Trainer(make_model(), TensorDataset(torch.zeros(0, 8), torch.zeros(0)), CFG)
    with pytest.raises(ConfigError, match="Dataset"):
        Trainer(make_model(), DataLoader(data), CFG)
    with pytest.raises(ConfigError, match="TrainConfig"):
        Trainer(make_model(), data, {"epochs": 1})


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_only_when_enabled_and_a_tty(make_data, make_model, monkeypatch, progress):
    fake = FakeTTY()
    monkeypatch.setattr("sys.stderr", fake)
    Trainer(make_model(), make_data(n=32), CFG.replace(progress=progress)).fit()
    assert ("epoch 1/2" in fake.getvalue()) == progress
    plain = io.StringIO()  # not a TTY (a log file): never a bar
    monkeypatch.setattr("sys.stderr", plain)
    Trainer(make_model(), make_data(n=32), CFG.replace(progress=True)).fit()
    assert "epoch 1/2" not in plain.getvalue()


def test_epoch_summary_is_logged(make_data, make_model, caplog):
    with caplog.at_level(logging.INFO, logger="netcompress.train"):
        Trainer(make_model(), make_data(n=32), CFG).fit()
    assert sum("train_loss=" in r.getMessage() for r in caplog.records) == 2


def test_worker_processes_give_the_same_result(make_data, make_model, helpers):
    data = make_data(n=64)
    runs = []
    for workers in (0, 2):
        model = make_model(dropout=0.2)
        Trainer(model, data, CFG.replace(num_workers=workers)).fit()
        runs.append(helpers.weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def _conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("nhwc", [True, False])
def test_channels_last_training_hands_back_default_layout_and_same_result(nhwc):
    data = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,)))
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, progress=False, channels_last=nhwc)
    model = _conv_net()
    params_before = [id(p) for p in model.parameters()]
    Trainer(model, data, cfg).fit()
    assert [id(p) for p in model.parameters()] == params_before
    assert all(p.is_contiguous() for p in model.parameters())  # safetensors and slicing need this
    reference = _conv_net()
    Trainer(reference, data, cfg.replace(channels_last=not nhwc)).fit()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # layout changes the sum order only


def test_channels_last_must_be_a_bool():
    with pytest.raises(ConfigError, match="channels_last"):
        TrainConfig(channels_last="yes")
