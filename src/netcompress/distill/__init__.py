"""Knowledge distillation: Hinton KD, logit regression, FitNet hints, attention transfer and FSP, as
terms of a ``Distiller`` callback that plugs into any ``Trainer`` run (also as the fine-tuning loss of
pruning, quantization-aware, low-rank and early-exit training)."""
from .distiller import Distiller, TeacherCache, train_hints
from .losses import (attention_loss, attention_map, fsp_loss, fsp_matrix, hint_loss, kd_loss,
                     logit_regression_loss)
from .taps import FeatureTaps, layer_names
from .terms import FSP, KD, AttentionTransfer, Distill, Hint, LogitRegression, Term

__all__ = ["Distill", "Term", "Distiller", "TeacherCache", "train_hints", "KD", "LogitRegression", "Hint", "AttentionTransfer", "FSP",
           "FeatureTaps", "layer_names", "kd_loss", "logit_regression_loss", "hint_loss", "attention_map",
           "attention_loss", "fsp_matrix", "fsp_loss"]
