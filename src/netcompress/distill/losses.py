"""Distillation losses as plain functions of tensors: Hinton KD, logit regression, FitNet hints,
attention transfer and FSP. They know nothing of models or training loops (see ``distiller``).

>>> import torch
>>> s, t = torch.randn(4, 10), torch.randn(4, 10)
>>> float(kd_loss(t, t, temperature=4.0))   # identical distributions: no loss
0.0
>>> attention_map(torch.randn(2, 8, 5, 5)).shape   # (B, H*W), unit norm per sample
torch.Size([2, 25])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, ModelError

__all__ = ["kd_loss", "logit_regression_loss", "hint_loss", "attention_energy", "attention_map", "attention_loss",
           "attention_loss_from_energy", "fsp_matrix", "fsp_loss", "fsp_loss_from_matrix", "check_temperature"]


def check_temperature(temperature: float) -> float:
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature) or temperature <= 0):
        raise ConfigError(f"temperature must be a finite number > 0 (1 = plain softmax, Hinton used 2-20); "
                          f"got {temperature!r}")
    return float(temperature)


def _check_logits(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        if student.dim() >= 1 and teacher.dim() >= 1 and student.shape[-1] != teacher.shape[-1]:
            raise ModelError(f"the student predicts {student.shape[-1]} classes but the teacher predicts "
                             f"{teacher.shape[-1]}; distillation needs the same classes in the same order")
        raise ModelError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
                         "differ in shape; both must be (batch, classes) for the same batch")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over the batch.

    Multiplied by T^2 because the soft targets' gradients scale as 1/T^2 (Hinton et al. 2015, sec. 2):
    without it, changing T would silently re-weight the soft term against the hard-label term."""
    t = check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits / t, dim=-1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True) / max(1, student_logits.shape[0])
    return kl * (t * t)


def logit_regression_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared L2 distance between logits, halved (Ba & Caruana 2014,
    "Do Deep Nets Really Need to be Deep?": the student regresses the teacher's pre-softmax values)."""
    _check_logits(student_logits, teacher_logits)
    diff = student_logits - teacher_logits.detach()
    return 0.5 * diff.pow(2).sum(dim=-1).mean()


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNet hint: mean squared error between the (adapted) guided layer and the teacher's hint layer.
    Spatial sizes that differ are matched by average-pooling the larger map to the smaller."""
    s, t = _match_spatial(student_feature, teacher_feature.detach(), "hint")
    if s.shape != t.shape:
        raise ModelError(f"hint: the adapted student feature {tuple(s.shape)} does not match the teacher's "
                         f"{tuple(t.shape)}; the adapter must output the teacher's channels")
    return F.mse_loss(s, t)


def _match_spatial(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != b.dim():
        raise ModelError(f"{what}: cannot match a {a.dim()}-d feature {tuple(a.shape)} with a {b.dim()}-d "
                         f"feature {tuple(b.shape)}; tap layers of the same kind (both conv or both linear)")
    if a.dim() != 4 or a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def attention_energy(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Unnormalised spatial attention: mean over channels of |A|^p. (B, C, H, W) -> (B, H, W).
    H*W floats per sample instead of C*H*W, which is what a teacher cache keeps for attention transfer."""
    if feature.dim() != 4:
        raise ModelError(f"attention transfer needs conv feature maps (B, C, H, W); got shape "
                         f"{tuple(feature.shape)}; tap a conv layer or block instead")
    return feature.abs().pow(p).mean(dim=1)


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of Zagoruyko & Komodakis: mean over channels of |A|^p, flattened and
    L2-normalised per sample. (B, C, H, W) -> (B, H*W)."""
    return F.normalize(attention_energy(feature, p).flatten(1), dim=1)


def attention_loss_from_energy(student_energy: torch.Tensor, teacher_energy: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the L2-normalised attention maps, from ``attention_energy`` outputs
    (B, H, W); different spatial sizes are matched by average-pooling the larger energy map."""
    s, t = student_energy, teacher_energy.detach()
    if s.dim() != 3 or t.dim() != 3 or s.shape[0] != t.shape[0]:
        raise ModelError(f"attention transfer: energy maps must be (B, H, W) with the same batch; got "
                         f"{tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[-2:] != t.shape[-2:]:
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)  # (B, H, W) read as (C, H, W)
    return (F.normalize(s.flatten(1), dim=1) - F.normalize(t.flatten(1), dim=1)).pow(2).mean()


def attention_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the normalised attention maps; channel counts may differ, and
    different spatial sizes are matched by average-pooling the larger (unnormalised) attention map."""
    if student_feature.dim() != teacher_feature.dim():
        raise ModelError(f"attention transfer: cannot match a {student_feature.dim()}-d feature "
                         f"{tuple(student_feature.shape)} with a {teacher_feature.dim()}-d feature "
                         f"{tuple(teacher_feature.shape)}; tap layers of the same kind (both conv)")
    return attention_loss_from_energy(attention_energy(student_feature, p), attention_energy(teacher_feature, p))


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Flow of solution procedure (Yim et al. 2017): G = F1 F2^T / (H*W).
    (B, C1, H, W), (B, C2, H, W) -> (B, C1, C2). A larger map is average-pooled to the smaller one."""
    if first.dim() != 4 or second.dim() != 4:
        raise ModelError(f"FSP needs two conv feature maps (B, C, H, W); got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    a, b = _match_spatial(first, second, "FSP")
    hw = a.shape[-2] * a.shape[-1]
    return torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)) / hw


def fsp_loss(student_pair: tuple[torch.Tensor, torch.Tensor],
             teacher_pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean squared difference between the student's and the teacher's FSP matrices."""
    return fsp_loss_from_matrix(fsp_matrix(*student_pair), fsp_matrix(*(t.detach() for t in teacher_pair)))


def fsp_loss_from_matrix(student_pair: tuple[torch.Tensor, torch.Tensor] | torch.Tensor,
                         teacher_matrix: torch.Tensor) -> torch.Tensor:
    """FSP loss against a precomputed teacher matrix (B, C1, C2) (what a teacher cache keeps);
    ``student_pair`` is the student's matrix or its two feature maps."""
    gs = student_pair if isinstance(student_pair, torch.Tensor) else fsp_matrix(*student_pair)
    gt = teacher_matrix.detach()
    if gs.shape != gt.shape:
        raise ModelError(f"FSP: the student's flow matrix {tuple(gs.shape[1:])} and the teacher's "
                         f"{tuple(gt.shape[1:])} differ; FSP needs layer pairs with the same channel "
                         "counts in student and teacher")
    return (gs - gt).pow(2).mean()
