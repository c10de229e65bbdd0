import pytest
import torch

from netcompress.core.errors import ConfigError
from netcompress.models import create_model
from netcompress.prune import (AGP, GradualPruning, Global, Iterative, LotteryTicket, OneShot, Unstructured,
                               find_ticket, iterative_prune, masked_targets, prune_, random_reinit, rewind_,
                               sparsity)
from netcompress.prune.sparse import plain_state_dict
from netcompress.train import TrainConfig, Trainer

TRAIN = TrainConfig(epochs=2, batch_size=64, lr=0.05, optimizer="sgd", seed=0, progress=False)


def _mlp():
    torch.manual_seed(0)
    return create_model("mlp", in_channels=1, input_size=8, hidden=(32, 16))


SCHEDULES = [
    # (schedule, step, expected target, tolerance)
    (AGP(final=0.9, end_step=100, every=10), 0, 0.0, 0),
    (AGP(final=0.9, end_step=100, every=10), 55, 0.9 - 0.9 * 0.5 ** 3, 1e-12),  # held at step 50
    (AGP(final=0.9, end_step=100, every=10), 100, 0.9, 0),
    (AGP(final=0.9, initial=0.5, begin_step=20, end_step=40, every=1), 10, 0.0, 0),
    (AGP(final=0.9, initial=0.5, begin_step=20, end_step=40, every=1), 20, 0.5, 1e-12),
    (Iterative(final=0.99, rounds=2), 1, 0.9, 1e-12),
    (Iterative(final=0.99, rounds=2), 2, 0.99, 1e-12),
    (OneShot(final=0.8, at_step=5), 4, 0.0, 0),
    (OneShot(final=0.8, at_step=5), 5, 0.8, 0),
]


@pytest.mark.parametrize("schedule,step,expected,tol", SCHEDULES)
def test_schedule_targets(schedule, step, expected, tol):
    assert abs(schedule.target(step) - expected) <= tol


def test_agp_is_monotone():
    agp = AGP(final=0.95, end_step=300, every=7)
    values = [agp.target(s) for s in range(400)]
    assert all(b >= a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("bad", [dict(final=1.0, end_step=10), dict(final=0.5, end_step=0),
                                 dict(final=0.5, initial=0.6, end_step=10), dict(final=0.5, end_step=10, every=0)])
def test_agp_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        AGP(**bad)


def test_gradual_pruning_in_trainer_and_resume(tmp_path, digits8):
    model = _mlp()
    agp = AGP(final=0.8, end_step=30, every=5)
    cb = GradualPruning(model, Unstructured(sparsity=0.0, scope=Global()), agp)
    history = Trainer(model, digits8.train, TRAIN, callbacks=[cb], checkpoint_dir=tmp_path).fit()
    assert sparsity(model) == pytest.approx(0.8, abs=1e-3)
    assert history[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    for t in masked_targets(model):  # pruned weights stayed zero through the later steps
        assert (t.effective()[~t.mask()] == 0).all()

    fresh = _mlp()
    cb2 = GradualPruning(fresh, Unstructured(sparsity=0.0, scope=Global()), agp)
    Trainer(fresh, digits8.train, TRAIN, callbacks=[cb2], checkpoint_dir=tmp_path, resume=True).fit()
    assert cb2.level == pytest.approx(cb.level)
    for a, b in zip(masked_targets(model), masked_targets(fresh)):
        assert torch.equal(a.mask(), b.mask()) and torch.equal(a.effective(), b.effective())


def test_iterative_prune_rounds(digits8):
    model = _mlp()
    hist = iterative_prune(model, Unstructured(sparsity=0.0), Iterative(final=0.75, rounds=2), digits8.train,
                           TRAIN, test_data=digits8.test)
    assert [round(h["sparsity"], 3) for h in hist] == [0.5, 0.75]
    assert hist[-1]["test_accuracy"] > 0.5


def test_rewind_keeps_masks_and_loads_values():
    model = _mlp()
    init = {k: v.clone() for k, v in plain_state_dict(model).items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    prune_(model, Unstructured(sparsity=0.6))
    rewind_(model, init)
    for t in masked_targets(model):
        assert torch.equal(t.effective(), init[t.fqn] * t.mask())
    assert torch.equal(model.net[1].bias, init["net.1.bias"])


@pytest.mark.parametrize("rewind_epoch", [0, 1])
def test_lottery_ticket_and_control(digits8, rewind_epoch):
    model = _mlp()
    init = {k: v.clone() for k, v in plain_state_dict(model).items()}
    ticket, hist, state = find_ticket(model, digits8.train, TRAIN, LotteryTicket(final=0.75, rounds=2,
                                      rewind_epoch=rewind_epoch), test_data=digits8.test)
    assert [round(h["sparsity"], 3) for h in hist] == [0.0, 0.5, 0.75]
    same_as_init = all(torch.equal(state[k], init[k]) for k in init)
    assert same_as_init == (rewind_epoch == 0)
    control = random_reinit(ticket, seed=1)
    for a, b in zip(masked_targets(ticket), masked_targets(control)):
        assert torch.equal(a.mask(), b.mask())
        assert not torch.equal(a.effective(), b.effective())
        assert (b.effective()[~b.mask()] == 0).all()
    assert sparsity(control) == pytest.approx(0.75, abs=1e-3)
    assert ticket.net[1].weight.requires_grad  # the ticket is still trainable


def test_lottery_rejects_rewind_beyond_training(digits8):
    with pytest.raises(ConfigError, match="rewind_epoch"):
        find_ticket(_mlp(), digits8.train, TRAIN, LotteryTicket(rewind_epoch=5))
