"""Distillation losses: invariants in one table (tolerance in the row), formulas, and bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from netcompress.core.errors import ConfigError, ModelError
from netcompress.distill import (attention_loss, attention_map, fsp_loss, fsp_matrix, hint_loss, kd_loss,
                                 logit_regression_loss)


def _logits():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)


def _feat(c=8, h=6, w=6, seed=2):
    return torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(seed))


# name, value computed by a lambda, expected, absolute tolerance
INVARIANTS = [
    ("kd of identical logits is zero", lambda: kd_loss(*(_logits()[0],) * 2, temperature=3.0), 0.0, 1e-6),
    ("kd is invariant to a shift of the logits", lambda: kd_loss(_logits()[0] + 5.0, _logits()[1], 2.0)
     - kd_loss(*_logits(), 2.0), 0.0, 1e-5),
    ("logit regression of identical logits is zero", lambda: logit_regression_loss(*(_logits()[0],) * 2), 0.0, 0.0),
    ("attention maps have unit norm", lambda: attention_map(_feat()).norm(dim=1).mean(), 1.0, 1e-6),
    ("attention loss ignores a positive feature scale", lambda: attention_loss(_feat() * 7.0, _feat()), 0.0, 1e-10),
    ("attention loss ignores channel order and count", lambda: attention_loss(
        torch.cat([_feat(), _feat()], 1)[:, torch.randperm(16)], _feat()), 0.0, 1e-10),
    ("fsp of identical pairs is zero", lambda: fsp_loss((_feat(), _feat(4, seed=3)), (_feat(), _feat(4, seed=3))),
     0.0, 0.0),
    ("hint loss of identical features is zero", lambda: hint_loss(_feat(), _feat()), 0.0, 0.0),
]


@pytest.mark.parametrize("name,value,expected,tol", INVARIANTS, ids=[r[0] for r in INVARIANTS])
def test_invariants(name, value, expected, tol):
    assert float(value()) == pytest.approx(expected, abs=tol)


def test_kd_matches_the_formula_with_t_squared():
    s, t = _logits()
    T = 4.0
    p_t = F.softmax(t / T, dim=1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(1).mean() * T * T
    assert float(kd_loss(s, t, T)) == pytest.approx(float(manual), rel=1e-5)


def test_t_squared_keeps_the_gradient_size_at_high_temperature():
    # Hinton et al. sec. 2.1: for zero-mean logits and large T, d(KL)/dz_i ~ (z_i - v_i) / (K T^2);
    # the T^2 factor makes the gradient (z - v) / K, independent of T
    s, t = _logits()
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    for T in (100.0, 1000.0):
        z = s.clone().requires_grad_(True)
        kd_loss(z, t, T).backward()
        expected = (s - t) / 10 / s.shape[0]
        assert torch.allclose(z.grad, expected, atol=2e-2 * float(expected.abs().max()))


def test_kd_gradient_does_not_reach_the_teacher():
    s, t = _logits()
    t.requires_grad_(True)
    kd_loss(s.requires_grad_(True), t, 2.0).backward()
    assert t.grad is None


def test_logit_regression_formula():
    s, t = _logits()
    assert float(logit_regression_loss(s, t)) == pytest.approx(float(0.5 * ((s - t) ** 2).sum(1).mean()), rel=1e-6)


def test_attention_map_formula_and_pooling_of_unequal_sizes():
    f = _feat()
    am = f.pow(2).mean(1).flatten(1)
    assert torch.allclose(attention_map(f), am / am.norm(dim=1, keepdim=True), atol=1e-7)
    big, small = _feat(h=12, w=12), _feat(c=5, h=6, w=6)
    loss = attention_loss(big, small)
    # the larger energy map mean_c |A|^2 is pooled (so a cache can keep the teacher's energy maps only)
    pooled = F.adaptive_avg_pool2d(big.pow(2).mean(1), 6).flatten(1)
    manual = (pooled / pooled.norm(dim=1, keepdim=True) - attention_map(small)).pow(2).mean()
    assert float(loss) == pytest.approx(float(manual), rel=1e-6) and float(loss) > 0


def test_fsp_matrix_formula():
    a, b = _feat(4), _feat(3, seed=5)
    g = fsp_matrix(a, b)
    manual = torch.einsum("bihw,bjhw->bij", a, b) / 36
    assert g.shape == (3, 4, 3) and torch.allclose(g, manual, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "4"])
def test_temperature_must_be_positive(bad):
    s, t = _logits()
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        kd_loss(s, t, bad)


def test_class_count_mismatch_names_both_counts():
    with pytest.raises(ModelError, match="student predicts 10 classes but the teacher predicts 7"):
        kd_loss(torch.randn(2, 10), torch.randn(2, 7), 2.0)
    with pytest.raises(ModelError, match="10 classes .* 7"):
        logit_regression_loss(torch.randn(2, 10), torch.randn(2, 7))


def test_shapes_that_cannot_be_matched():
    with pytest.raises(ModelError, match="conv feature maps"):
        attention_map(torch.randn(2, 10))
    with pytest.raises(ModelError, match="same channel"):
        fsp_loss((_feat(4), _feat(3)), (_feat(4), _feat(5)))
    with pytest.raises(ModelError, match="adapter must output the teacher's channels"):
        hint_loss(_feat(4), _feat(6))
    with pytest.raises(ModelError, match="2-d feature"):
        hint_loss(_feat(4), torch.randn(3, 4))
    assert math.isfinite(float(hint_loss(_feat(4, h=12, w=12), _feat(4))))  # spatial sizes are pooled
