import pytest
import torch

from netcompress.core.errors import ConfigError
from netcompress.train import Callback, Trainer, TrainConfig

CFG = TrainConfig(epochs=2, batch_size=4, lr=0.1, momentum=0.0, scheduler=None, progress=False)


class Recorder(Callback):
    def __init__(self):
        self.calls = []
        self.steps = []
        self.metrics_seen = []

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer, epoch):
        assert trainer.epoch == epoch and trainer.model.training
        self.calls.append(f"epoch_start{epoch}")

    def on_batch_start(self, trainer, inputs, targets):
        assert inputs.shape[0] == targets.shape[0] == 4
        self.before = trainer.model[0].weight.detach().clone()
        self.calls.append("batch_start")

    def extra_loss(self, trainer, inputs, outputs, targets):
        assert outputs.requires_grad
        self.calls.append("extra_loss")
        return None

    def on_after_backward(self, trainer):
        w = trainer.model[0].weight
        # gradients exist, the optimizer has not stepped yet
        assert w.grad is not None and torch.equal(w.detach(), self.before)
        self.calls.append("after_backward")

    def on_step_end(self, trainer, step, loss):
        assert not torch.equal(trainer.model[0].weight.detach(), self.before)
        assert step == trainer.global_step and isinstance(loss, float)
        self.steps.append(step)
        self.calls.append("step_end")

    def on_epoch_end(self, trainer, epoch, metrics):
        assert trainer.history[-1] is metrics
        metrics["custom"] = 10 + epoch
        self.calls.append(f"epoch_end{epoch}")

    def on_fit_end(self, trainer):
        self.calls.append("fit_end")


def test_hook_order_and_arguments(make_data, make_model):
    rec = Recorder()
    trainer = Trainer(make_model(), make_data(n=8), CFG, val_data=make_data(n=8), callbacks=[rec])
    history = trainer.fit()
    batch = ["batch_start", "extra_loss", "after_backward", "step_end"]
    expected = (["fit_start"] + ["epoch_start0"] + batch * 2 + ["epoch_end0"]
                + ["epoch_start1"] + batch * 2 + ["epoch_end1"] + ["fit_end"])
    assert rec.calls == expected
    assert rec.steps == [1, 2, 3, 4]
    assert trainer.steps_per_epoch == 2 and trainer.global_step == 4 and trainer.is_main
    # keys added in on_epoch_end land in the history
    assert [m["custom"] for m in history] == [10, 11]


class ConstantLoss(Callback):
    def extra_loss(self, trainer, inputs, outputs, targets):
        return torch.tensor(5.0)


class L1(Callback):
    def __init__(self, coef):
        self.coef = coef

    def extra_loss(self, trainer, inputs, outputs, targets):
        return self.coef * trainer.model[0].weight.abs().sum()


def test_extra_loss_is_added_to_the_loss(make_data, make_model, helpers):
    data = make_data(n=32)
    cfg = CFG.replace(batch_size=8)
    base_model, const_model, l1_model = make_model(), make_model(), make_model()
    base = Trainer(base_model, data, cfg).fit()
    const = Trainer(const_model, data, cfg, callbacks=[ConstantLoss()]).fit()
    # a constant adds 5 to the reported loss but no gradient
    for b, c in zip(base, const):
        assert c["train_loss"] == pytest.approx(b["train_loss"] + 5.0, abs=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(helpers.weights(base_model).values(),
                                                 helpers.weights(const_model).values()))
    # an L1 penalty shrinks the penalised weights
    Trainer(l1_model, data, cfg, callbacks=[L1(0.05)]).fit()
    assert l1_model[0].weight.abs().sum() < 0.8 * base_model[0].weight.abs().sum()


class ZeroMaskedGrads(Callback):
    """What a pruning callback does: pruned weights never move."""

    def __init__(self, mask):
        self.mask = mask

    def on_after_backward(self, trainer):
        trainer.model[0].weight.grad.mul_(self.mask)


def test_on_after_backward_can_freeze_weights(make_data, make_model):
    model = make_model()
    before = model[0].weight.detach().clone()
    mask = (torch.rand_like(before) > 0.5).float()
    Trainer(model, make_data(n=32), CFG.replace(batch_size=8),
            callbacks=[ZeroMaskedGrads(mask)]).fit()
    after = model[0].weight.detach()
    assert torch.equal(after[mask == 0], before[mask == 0])
    assert not torch.equal(after[mask == 1], before[mask == 1])


def test_callbacks_must_subclass_callback(make_data, make_model):
    with pytest.raises(ConfigError, match="Callback"):
        Trainer(make_model(), make_data(), CFG, callbacks=[object()])


def test_base_callback_state_is_empty():
    cb = Callback()
    assert cb.state_dict() == {}
    cb.load_state_dict({})
