"""The Distiller as a Trainer callback: exact loss, frozen teacher, caching, adapters, FitNet stage 1,
masked (pruned) and early-exit students, and the bad-input errors of issue 6."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import TensorDataset

from netcompress.core.errors import CheckpointError, ConfigError, ModelError, OutputExistsError
from netcompress.distill import (FSP, KD, AttentionTransfer, Distiller, Hint, LogitRegression, TeacherCache, kd_loss,
                                 train_hints)
from netcompress.models import create_model
from netcompress.train import TrainConfig, Trainer, evaluate


@pytest.fixture(scope="module")
def digits8():
    from netcompress.data import digits

    return digits(image_size=8)


def _mlp(hidden, seed):
    torch.manual_seed(seed)
    return create_model("mlp", input_size=8, hidden=hidden)


def _cfg(**kw):
    base = dict(epochs=1, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.0, progress=False, seed=0)
    return TrainConfig(**{**base, **kw})


def _subset(ds, n):
    x, y = ds.tensors
    return TensorDataset(x[:n], y[:n])


def test_one_trainer_step_equals_the_kd_formula(digits8):
    teacher, student = _mlp((32,), 1), _mlp((16,), 2)
    data = _subset(digits8.train, 64)
    x, y = data.tensors
    ref = copy.deepcopy(student)
    d = Distiller(teacher, student, KD(temperature=3.0, alpha=0.7, beta=0.3))
    Trainer(student, data, _cfg(), callbacks=[d]).fit()
    # the same SGD step by hand: 0.3 * CE + 0.7 * 9 * KL
    out = ref(x)
    loss = 0.3 * F.cross_entropy(out, y) + 0.7 * kd_loss(out, teacher(x).detach(), 3.0)
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.05 * p.grad
    for a, b in zip(student.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_teacher_is_frozen_and_unchanged(digits8):
    teacher, student = _mlp((32,), 1), _mlp((16,), 2)
    teacher.train()
    before = copy.deepcopy(teacher.state_dict())
    d = Distiller(teacher, student, [KD(), LogitRegression(0.1)])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # a caller flipping it back does not leak dropout/BN noise into the targets
    Trainer(student, _subset(digits8.train, 128), _cfg(), callbacks=[d]).fit()
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not m._forward_hooks for m in list(teacher.modules()) + list(student.modules()))


class _Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("features", [False, True], ids=["logits", "logits+attention"])
def test_cache_skips_the_teacher_after_the_first_epoch_and_changes_nothing(digits8, features):
    data = _subset(digits8.train, 256 if not features else 128)
    runs = {}
    for cache in (False, True):
        if features:
            t, student = _resnets()
            terms = [KD(temperature=2.0), AttentionTransfer([("layer2", "inner.layer2")])]  # names in the wrapper
        else:
            t, student, terms = _mlp((32,), 1), _mlp((16,), 2), KD(temperature=2.0)
        teacher = _Counting(t)
        d = Distiller(teacher, student, terms, cache=cache)
        Trainer(student, data, _cfg(epochs=3), callbacks=[d]).fit()
        runs[cache] = (teacher.calls, student)
    batches = len(data) // 64
    assert runs[False][0] == 3 * batches and runs[True][0] == batches
    for a, b in zip(runs[False][1].parameters(), runs[True][1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_shared_cache_runs_the_teacher_once_for_several_methods(digits8):
    t, student = _resnets()
    teacher = _Counting(t)
    data = _subset(digits8.train, 128)
    cache = TeacherCache()
    filler = Distiller(teacher, copy.deepcopy(student), AttentionTransfer([("layer1", "inner.layer1"),
                                                                          ("layer2", "inner.layer2")]), cache=cache)
    assert filler.precompute(data, batch_size=64) == 128 and teacher.calls == 2
    for terms in ([KD()], [AttentionTransfer([("layer2", "inner.layer2")])]):
        d = Distiller(teacher, copy.deepcopy(student), terms, cache=cache)
        Trainer(d.student, data, _cfg(epochs=2), callbacks=[d]).fit()
    assert teacher.calls == 2
    with pytest.raises(ConfigError, match="another teacher"):
        Distiller(_mlp((8,), 0), _mlp((8,), 1), KD(), cache=cache)


def test_the_cache_keeps_summaries_of_teacher_maps_and_the_losses_equal_uncached(digits8):
    """Attention transfer caches (H, W) energy maps and FSP (C1, C2) flow matrices per sample, not the
    (C, H, W) maps, and the cached losses equal the ones computed from the live teacher."""
    teacher, student = _resnets()
    data = _subset(digits8.train, 16)
    x = data.tensors[0]
    terms = [AttentionTransfer([("layer2", "layer2")]), FSP([(("layer1.0", "layer1"), ("layer1.0", "layer1"))])]
    cache = TeacherCache()
    cached = Distiller(teacher, student, terms, cache=cache, example_input=x[:2])
    assert cached.precompute(data) == 16
    _, entry = next(iter(cache.entries.values()))
    with torch.no_grad():
        c2, h2, w2 = teacher.layer2(teacher.layer1(F.relu(teacher.bn1(teacher.conv1(x[:1]))))).shape[1:]
    assert entry["attention(p=2):layer2"].shape == (h2, w2) and c2 > 1  # not (C, H, W)
    c1 = teacher.layer1[0].bn2.num_features
    assert entry["fsp:layer1.0|layer1"].shape == (c1, c1)
    live = Distiller(teacher, copy.deepcopy(student), terms, example_input=x[:2])
    out = {}
    for name, d in (("cached", cached), ("live", live)):
        d.student.eval()
        with d._student_taps:
            out[name] = d.losses(x, d.student(x))
    a, b = out["cached"], out["live"]
    assert a.keys() == b.keys() == {"attention", "fsp"}
    assert all(torch.allclose(a[k], b[k], rtol=1e-5) and float(a[k].detach()) > 0 for k in a)


def test_a_saved_cache_serves_a_later_run_without_the_teacher_and_refuses_another_teacher(digits8, tmp_path):
    t, student = _resnets()
    data = _subset(digits8.train, 64)
    terms = [KD(), AttentionTransfer([("layer2", "layer2")])]
    cache = TeacherCache()
    Distiller(t, copy.deepcopy(student), terms, cache=cache).precompute(data)
    path = cache.save(tmp_path / "t.safetensors")
    with pytest.raises(OutputExistsError):
        cache.save(path)
    teacher = copy.deepcopy(t)
    calls = []
    teacher.register_forward_pre_hook(lambda m, a: calls.append(1))
    loaded = TeacherCache.load(path, teacher)
    assert len(loaded) == 64
    runs = []
    for c, tt in ((cache, t), (loaded, teacher)):
        s = copy.deepcopy(student)
        Trainer(s, data, _cfg(epochs=1), callbacks=[Distiller(tt, s, terms, cache=c)]).fit()
        runs.append(s)
    assert not calls  # every batch came from the file
    assert all(torch.equal(a, b) for a, b in zip(runs[0].parameters(), runs[1].parameters()))
    other = copy.deepcopy(t)
    with torch.no_grad():
        next(other.parameters())[0] += 1.0
    with pytest.raises(ConfigError, match="other weights"):
        TeacherCache.load(path, other)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        TeacherCache.load(path, t)


def test_kd_is_the_finetuning_loss_of_a_masked_student(digits8):
    """A pruned student (parametrize mask) fine-tuned with KD: the mask holds and the student moves
    towards the teacher."""
    torch.manual_seed(0)
    teacher = create_model("mlp", input_size=8, hidden=(64,))
    Trainer(teacher, digits8.train, _cfg(epochs=15, lr=0.1, momentum=0.9)).fit()
    student = copy.deepcopy(teacher)

    class Mask(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.register_buffer("mask", (w.abs() > w.abs().flatten().kthvalue(int(0.8 * w.numel())).values).float())

        def forward(self, w):
            return w * self.mask

    for lin in (student.net[1], student.net[3]):
        parametrize.register_parametrization(lin, "weight", Mask(lin.weight.detach()))
    x = digits8.val.tensors[0]
    gap = lambda: float(kd_loss(student(x), teacher(x), 4.0).detach())  # noqa: E731
    before = gap()
    ids = [id(p) for p in student.parameters()]
    d = Distiller(teacher, student, KD(temperature=4.0, alpha=0.9, beta=0.1))
    Trainer(student, digits8.train, _cfg(epochs=4, lr=0.05, momentum=0.9), callbacks=[d]).fit()
    assert gap() < 0.5 * before
    assert [id(p) for p in student.parameters()] == ids
    for lin in (student.net[1], student.net[3]):
        zeros = lin.parametrizations.weight[0].mask == 0
        assert bool((lin.weight[zeros] == 0).all()) and zeros.float().mean() > 0.79
    assert evaluate(student, digits8.test)["accuracy"] > 0.85


class _TwoExits(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.exit1 = nn.Linear(16, 10)
        self.exit2 = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        h = self.body(x)
        return self.exit1(h), self.exit2(h)


def test_early_exit_student_averages_kd_over_exits(digits8):
    teacher, student = _mlp((32,), 1), _TwoExits()
    x = digits8.train.tensors[0][:32]
    d = Distiller(teacher, student, KD(temperature=2.0, alpha=1.0, beta=0.0), student_logits=list, example_input=x)
    e1, e2 = student(x)
    t = teacher(x)
    expected = (kd_loss(e1, t, 2.0) + kd_loss(e2, t, 2.0)) / 2
    assert float(d.losses(x, (e1, e2))["kd"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def _resnets():
    torch.manual_seed(0)
    kw = dict(in_channels=1, input_size=8, width=8)
    return create_model("resnet32", **kw), create_model("resnet20", **kw)


def test_feature_terms_train_only_the_student(digits8):
    teacher, student = _resnets()
    x = digits8.train.tensors[0][:16]
    terms = [KD(), AttentionTransfer([("layer1", "layer1"), ("layer2", "layer2")]),
             FSP([(("layer1", "layer2"), ("layer1", "layer2"))], weight=10.0)]
    d = Distiller(teacher, student, terms, example_input=x)
    student.train()
    loss = d.loss(x, digits8.train.tensors[1][:16])
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.layer2[0].conv1.weight.grad.abs().sum() > 0
    hist = Trainer(student, _subset(digits8.train, 128), _cfg(epochs=2), callbacks=[d]).fit()
    assert len(hist) == 2 and all(h["train_loss"] == h["train_loss"] for h in hist)


def test_hint_adapter_must_be_in_the_optimizer(digits8):
    teacher, student = _resnets()
    x = digits8.train.tensors[0][:16]
    data = _subset(digits8.train, 64)
    with pytest.raises(ConfigError, match="needs example_input"):
        Distiller(teacher, student, Hint("layer2", "layer3"))
    d = Distiller(teacher, student, [KD(), Hint("layer2", "layer3")], example_input=x)
    assert isinstance(d.adapters["1"], nn.Conv2d) and d.adapters["1"].weight.shape == (32, 16, 1, 1)
    with pytest.raises(ConfigError, match="adapters .* not in the optimizer"):
        Trainer(student, data, _cfg(), callbacks=[d]).fit()
    before = d.adapters["1"].weight.detach().clone()
    Trainer(student, data, _cfg(), callbacks=[d], optimizer=d.build_optimizer(_cfg())).fit()
    assert not torch.equal(before, d.adapters["1"].weight)


def test_fitnet_stage_one_trains_only_up_to_the_guided_layer(digits8):
    teacher, student = _resnets()
    x = digits8.train.tensors[0][:32]
    after = {k: v.clone() for k, v in student.state_dict().items() if k.startswith(("layer3", "fc"))}
    lower = student.layer1[0].conv1.weight.detach().clone()
    hint = Hint("layer2", "layer2", adapter=True)
    hist = train_hints(teacher, student, _subset(digits8.train, 256), hint,
                       _cfg(epochs=4, lr=0.05, momentum=0.9, weight_decay=1e-3), example_input=x)
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert all(torch.equal(student.state_dict()[k], v) for k, v in after.items())  # untouched, even by decay
    assert not torch.equal(lower, student.layer1[0].conv1.weight)


def test_resume_restores_the_adapters(digits8, tmp_path):
    teacher, student = _resnets()
    x = digits8.train.tensors[0][:16]
    d = Distiller(teacher, student, Hint("layer1", "layer1"), example_input=x)
    Trainer(student, _subset(digits8.train, 64), _cfg(), callbacks=[d], optimizer=d.build_optimizer(_cfg()),
            checkpoint_dir=tmp_path).fit()
    saved = d.adapters["0"].weight.detach().clone()
    student2 = copy.deepcopy(student)
    d2 = Distiller(teacher, student2, Hint("layer1", "layer1"), example_input=x)
    Trainer(student2, _subset(digits8.train, 64), _cfg(), callbacks=[d2], optimizer=d2.build_optimizer(_cfg()),
            checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(d2.adapters["0"].weight, saved)


# ---------------------------------------------------------------------------------- bad input (issue 6 #4)

def test_class_count_mismatch_is_caught_up_front_and_leaves_the_teacher_alone(digits8):
    teacher = create_model("mlp", input_size=8, hidden=(16,), num_classes=7).train()
    student = _mlp((16,), 2)
    x = digits8.train.tensors[0][:4]
    with pytest.raises(ModelError, match="student predicts 10 classes but the teacher predicts 7"):
        Distiller(teacher, student, KD(), example_input=x)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    d = Distiller(teacher, student, KD())  # without an example it fails at the first step
    with pytest.raises(ModelError, match="10 classes but the teacher predicts 7"):
        Trainer(student, _subset(digits8.train, 32), _cfg(), callbacks=[d]).fit()


def test_missing_tap_name_lists_candidates():
    teacher, student = _resnets()
    with pytest.raises(ModelError, match=r"teacher \(CifarResNet\) has no layer named 'layer4'.*Layers: \["):
        Distiller(teacher, student, AttentionTransfer([("layer3", "layer4")]))
    with pytest.raises(ModelError, match=r"student .* no layer named 'layr2'.*Closest: \['layer2'"):
        Distiller(teacher, student, Hint("layr2", "layer2", adapter=False))
    assert teacher.training  # nothing was frozen


@pytest.mark.parametrize("bad", [0, 0.0, -2.0, float("nan")])
def test_temperature_must_be_positive(bad):
    with pytest.raises(ConfigError, match="KD.temperature must be a (finite )?number"):
        KD(temperature=bad)


def test_unmatchable_shapes_and_bad_configs(digits8):
    torch.manual_seed(0)
    teacher, student = create_model("resnet20", in_channels=1, input_size=8, width=8), _mlp((16,), 2)
    x = digits8.train.tensors[0][:4]
    with pytest.raises(ModelError, match="cannot match a 2-d feature .* tap layers of the same kind"):
        Distiller(teacher, student, AttentionTransfer([("net.1", "layer1")]), example_input=x)
    with pytest.raises(ModelError, match="conv feature maps"):
        Distiller(create_model("mlp", input_size=8, hidden=(16,)), student, AttentionTransfer([("net.1", "net.1")]),
                  example_input=x)
    with pytest.raises(ModelError, match="cannot build an adapter"):
        Distiller(teacher, student, Hint("net.1", "layer1"), example_input=x)
    t2, s2 = _resnets()
    with pytest.raises(ModelError, match="same channel"):
        Distiller(t2, s2, FSP([(("layer1", "layer2"), ("layer1", "layer3"))]), example_input=x)
    with pytest.raises(ConfigError, match="same module"):
        Distiller(s2, s2, KD())
    with pytest.raises(ConfigError, match="task_weight conflicts with KD.beta"):
        Distiller(t2, s2, KD(), task_weight=0.5)
    with pytest.raises(ConfigError, match=r"AttentionTransfer.pairs\[0\] must be a list of 2"):
        AttentionTransfer(["layer1"])
    with pytest.raises(ConfigError, match="KD.alpha must be a number >= 0"):
        KD(alpha=-1)
