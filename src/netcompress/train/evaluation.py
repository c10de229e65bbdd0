"""Evaluation, plus the batch helpers the training loop shares with it.

Batches are ``(inputs, targets)``; model outputs may be a tensor, a tuple whose first element is
the logits, or a dict with ``"logits"`` (e.g. a model that also returns features for distillation)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ..core.errors import ConfigError, DataError

LossFn = Callable[[Any, Any, Any], torch.Tensor]  # loss_fn(outputs, targets, inputs) -> scalar

# ----------------------------------------------------------------------------------------- helpers

def logits_of(outputs: Any) -> Optional[torch.Tensor]:
    """The classification logits inside a model output (tensor, first of a tuple, or dict['logits'])."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    if isinstance(outputs, dict) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    return None


def cross_entropy(outputs: Any, targets: Any, inputs: Any = None,
                   label_smoothing: float = 0.0) -> torch.Tensor:
    logits = logits_of(outputs)
    if logits is None:
        raise ConfigError(f"the model returned {type(outputs).__name__}, not logits; pass a loss_fn "
                          "(outputs, targets, inputs) -> scalar tensor that understands it")
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


def count_correct(outputs: Any, targets: Any) -> Optional[tuple[int, int]]:
    """(correct, counted) for class-index or soft-label targets; None when accuracy is undefined
    (e.g. a regression loss), so it is reported as None rather than as a wrong number."""
    logits = logits_of(outputs)
    if logits is None or logits.dim() != 2 or not isinstance(targets, torch.Tensor):
        return None
    if not targets.is_floating_point() and targets.shape == logits.shape[:1]:
        labels = targets
    elif (targets.is_floating_point() and targets.shape == logits.shape and bool((targets >= 0).all())
          and torch.allclose(targets.sum(dim=1).float(), torch.ones(len(targets)), atol=1e-3)):
        # soft labels (mixup, distillation targets); other float targets are regression
        labels = targets.argmax(dim=1)
    else:
        return None
    return int((logits.argmax(dim=1) == labels).sum()), int(labels.numel())


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    size = len(batch) if hasattr(batch, "__len__") else "?"
    raise DataError(f"each batch must be (inputs, targets); the data set yields "
                    f"{type(batch).__name__} of length {size}")


def batch_len(inputs: Any, targets: Any) -> int:
    for x in (targets, inputs):
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            return int(x.shape[0])
        if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
            return int(x[0].shape[0])
    raise DataError("cannot tell the batch size: neither inputs nor targets is a batched tensor")


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# -------------------------------------------------------------------------------------- evaluation

def eval_sums(model: nn.Module, loader: Iterable, loss_fn: LossFn) -> list[float]:
    """[loss_sum, correct, counted, n] over ``loader``, in eval mode without gradients."""
    modes = [(m, m.training) for m in model.modules()]
    device = model_device(model)
    loss_sum, correct, counted, n = 0.0, 0, 0, 0
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                inputs, targets = to_device(split_batch(batch), device)
                outputs = model(inputs)
                bs = batch_len(inputs, targets)
                loss_sum += float(loss_fn(outputs, targets, inputs)) * bs
                n += bs
                hit = count_correct(outputs, targets)
                if hit is not None:
                    correct += hit[0]
                    counted += hit[1]
    finally:
        # restore each module's own flag: model.train() would also un-freeze deliberately frozen BN
        for m, was_training in modes:
            m.training = was_training
    return [loss_sum, float(correct), float(counted), float(n)]


def eval_result(loss_sum: float, correct: float, counted: float, n: float) -> dict[str, Any]:
    return {"accuracy": correct / counted if counted else None,
            "loss": loss_sum / n if n else None,
            "n": int(n)}


def evaluate(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 512,
             loss_fn: Optional[LossFn] = None) -> dict[str, Any]:
    """Accuracy and mean per-sample loss of ``model`` on ``data`` -> {"accuracy", "loss", "n"}.

    ``loss_fn(outputs, targets, inputs)`` defaults to cross-entropy; accuracy is None when the
    targets are not class labels. Runs in eval mode under no_grad and restores every module's
    train/eval flag afterwards."""
    model = unwrap(model)
    if isinstance(data, DataLoader):
        loader = data
    else:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"evaluate(): batch_size must be an integer >= 1; got {batch_size!r}")
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return eval_result(*eval_sums(model, loader, loss_fn or cross_entropy))
