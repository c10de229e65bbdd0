"""The training loop shared by every compression method.

Methods plug in through callbacks, a custom ``loss_fn`` (distillation) or their own optimizer;
the loop itself owns determinism, checkpoint/resume and data parallelism so those are solved once."""
from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from tqdm import tqdm

from ..core.errors import CheckpointError, ConfigError, DataError, NetcompressError, OutputExistsError
from . import distributed as D
from .callbacks import Callback
from .checkpoint import (CHECKPOINT_NAME, check_resumable, load_checkpoint, match_callbacks, restore_rng,
                         save_checkpoint, seed_everything)
from .config import TrainConfig
from .evaluation import (LossFn, batch_len, count_correct, cross_entropy, eval_result, eval_sums,
                         evaluate, model_device, split_batch, to_device)

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "evaluate", "build_optimizer", "build_scheduler"]


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's base seed; derive the other RNGs from it
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


# ------------------------------------------------------------------------- optimizer and scheduler

def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "onecycle":
        # cycling momentum would switch it on for plain SGD (momentum=0); only cycle what exists
        defaults = optimizer.defaults
        cycle = "betas" in defaults or bool(defaults.get("momentum", 0))
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
            cycle_momentum=cycle)
    return None


# ----------------------------------------------------------------------------------------- trainer

class Trainer:
    """Train ``model`` on ``train_data`` (a map-style Dataset yielding (inputs, targets)).

    ``loss_fn(outputs, targets, inputs)`` defaults to cross-entropy with ``label_smoothing``;
    validation uses ``loss_fn`` if one is given, else plain cross-entropy. With ``checkpoint_dir``,
    ``last.pt`` is written there after every epoch; ``resume=True`` continues from it. Under
    torchrun (WORLD_SIZE > 1) or after ``init_distributed()`` training is data-parallel with the
    same global batch, so results match the one-process run."""

    _nhwc_inputs = False  # set for the duration of fit() when the model trains channels-last

    def __init__(self, model: nn.Module, train_data: Dataset, config: TrainConfig,
                 val_data: Optional[Dataset] = None, loss_fn: Optional[LossFn] = None,
                 callbacks: Iterable[Callback] = (), checkpoint_dir: Optional[str | Path] = None,
                 resume: bool = False, optimizer: Optional[torch.optim.Optimizer] = None,
                 overwrite: bool = False):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig; got {type(config).__name__}")
        if isinstance(model, DistributedDataParallel) or not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a plain nn.Module (the trainer wraps it for DDP itself); "
                              f"got {type(model).__name__}")
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is not None and (isinstance(data, (DataLoader, IterableDataset))
                                     or not hasattr(data, "__len__")):
                raise ConfigError(f"{name} must be a map-style Dataset with __len__ (the trainer builds "
                                  f"its own loader for a reproducible order); got {type(data).__name__}")
        if len(train_data) == 0:
            raise DataError("train_data is empty; check the data set path and split")
        self.callbacks: list[Callback] = list(callbacks)
        bad = [type(cb).__name__ for cb in self.callbacks if not isinstance(cb, Callback)]
        if bad:
            raise ConfigError(f"callbacks must subclass netcompress.train.Callback; got {bad}")

        self.model = model
        self.config = config
        self.train_data = train_data
        self.val_data = val_data
        self._custom_loss = loss_fn is not None
        self.loss_fn: LossFn = loss_fn or (lambda o, t, i: cross_entropy(
            o, t, i, label_smoothing=config.label_smoothing))
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.global_step = 0
        self._start_epoch = 0
        self._resumed = False
        self._pending_rng: Optional[dict] = None
        self._forward_model: nn.Module = model
        self._owns_process_group = False

        self.world_size = D.world_size() if D.launched_distributed() else 1
        self.rank = D.rank() if self.world_size > 1 else 0
        per_rank_batch = config.batch_size // self.world_size
        if per_rank_batch < 1:
            raise ConfigError(f"TrainConfig.batch_size must be >= the number of processes "
                              f"({self.world_size}); got {config.batch_size}")
        if config.batch_size % self.world_size:
            logger.warning("batch_size %d is not divisible by %d processes: the global batch is %d, "
                           "so results will differ from a one-process run", config.batch_size,
                           self.world_size, per_rank_batch * self.world_size)
        self.sampler = D.EpochSampler(train_data, num_replicas=self.world_size, rank=self.rank,
                                      seed=config.seed)
        self.train_loader = DataLoader(
            train_data, batch_size=per_rank_batch, sampler=self.sampler, drop_last=False,
            num_workers=config.num_workers, worker_init_fn=_seed_worker if config.num_workers else None)
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = optimizer if optimizer is not None else build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch)
        self._scheduler_per_step = config.scheduler in ("cosine", "onecycle")

        self.checkpoint_path: Optional[Path] = None
        self._delete_old_checkpoint = False
        if checkpoint_dir is None:
            if resume:
                raise ConfigError("resume=True needs a checkpoint_dir to resume from")
        else:
            directory = Path(checkpoint_dir)
            if directory.exists() and not directory.is_dir():
                raise ConfigError(f"checkpoint_dir {directory} is a file; pass a folder")
            self.checkpoint_path = directory / CHECKPOINT_NAME
            if self.checkpoint_path.exists():
                if resume:
                    self._load(self.checkpoint_path)
                elif not overwrite:
                    raise OutputExistsError(
                        f"{self.checkpoint_path} holds a previous run; pass resume=True to continue it, "
                        "overwrite=True to replace it, or choose another checkpoint_dir")
                else:
                    self._delete_old_checkpoint = True
            elif resume:
                logger.warning("resume=True but %s does not exist; starting a fresh run",
                               self.checkpoint_path)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------------------ checkpoints
    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        check_resumable(path, ckpt, self.config)
        states = match_callbacks(path, ckpt, self.callbacks)  # fail before touching the model
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint {path} does not fit the model ({first}); build the model "
                                  "with the options the run was started with") from None
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt["scheduler"] is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path}: optimizer/scheduler state does not fit ({exc}); "
                                  "pass the same optimizer the run was started with") from None
        for cb, state in states:
            cb.load_state_dict(state)
        self.history = list(ckpt["history"])
        self.global_step = int(ckpt["global_step"])
        self._start_epoch = self.epoch = int(ckpt["epoch"]) + 1
        self._pending_rng = ckpt["rng"]
        self._resumed = True
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a kill during a write
            stale.unlink(missing_ok=True)
        logger.info("resuming from %s after epoch %d/%d (step %d)", path, self._start_epoch,
                    self.config.epochs, self.global_step)

    def _save(self, epoch: int) -> None:
        if self.checkpoint_path is None or not self.is_main:
            return
        save_checkpoint(self.checkpoint_path, model=self.model, optimizer=self.optimizer,
                        scheduler=self.scheduler, epoch=epoch, global_step=self.global_step,
                        history=self.history, callbacks=self.callbacks, config=self.config)

    # ----------------------------------------------------------------------------- distributed
    def _setup_distributed(self) -> None:
        if self.world_size == 1:
            return
        self._owns_process_group = D.init_distributed()
        if D.world_size() != self.world_size or D.rank() != self.rank:
            raise ConfigError(f"process group has rank {D.rank()} of {D.world_size()}, but the trainer "
                              f"was built for rank {self.rank} of {self.world_size}")
        self._forward_model = DistributedDataParallel(self.model)

    def _teardown_distributed(self) -> None:
        self._forward_model = self.model
        if self._owns_process_group:
            D.destroy_distributed()
            self._owns_process_group = False

    # ------------------------------------------------------------------------------------- fit
    def fit(self) -> list[dict[str, Any]]:
        """Train for the remaining epochs; returns the per-epoch metrics (also in ``history``)."""
        if self._resumed and self._start_epoch >= self.config.epochs:
            logger.info("the run in %s already finished %d epochs", self.checkpoint_path,
                        self._start_epoch)
            return self.history
        self._setup_distributed()
        nhwc = self._nhwc_inputs = self._use_channels_last()
        if nhwc:
            self.model.to(memory_format=torch.channels_last)
        try:
            if self._delete_old_checkpoint and self.is_main and self.checkpoint_path.exists():
                self.checkpoint_path.unlink()  # overwrite=True: a crash must not resume the old run
            self._delete_old_checkpoint = False
            if self._pending_rng is None and not self._resumed:
                seed_everything(self.config.seed)
            for cb in self.callbacks:
                cb.on_fit_start(self)
            if self._pending_rng is not None:
                # after on_fit_start, so RNG use there cannot shift the resumed run's stream
                restore_rng(self._pending_rng)
                self._pending_rng = None
            for epoch in range(self._start_epoch, self.config.epochs):
                self._run_epoch(epoch)
                self._start_epoch = epoch + 1
            self._resumed = True  # a second fit() call returns the finished history
            for cb in self.callbacks:
                cb.on_fit_end(self)
            return self.history
        finally:
            if nhwc:
                self.model.to(memory_format=torch.contiguous_format)
                self._nhwc_inputs = False
            self._teardown_distributed()

    def _use_channels_last(self) -> bool:
        return self.config.channels_last and any(isinstance(m, torch.nn.Conv2d) for m in self.model.modules())

    def _show_progress(self) -> bool:
        isatty = getattr(sys.stderr, "isatty", None)
        return self.config.progress and self.is_main and bool(isatty and isatty())

    def _train_step(self, batch: Any) -> tuple[float, int, Optional[tuple[int, int]]]:
        inputs, targets = to_device(split_batch(batch), model_device(self.model))
        if self._nhwc_inputs and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        for cb in self.callbacks:
            cb.on_batch_start(self, inputs, targets)
        outputs = self._forward_model(inputs)
        loss = self.loss_fn(outputs, targets, inputs)
        for cb in self.callbacks:
            extra = cb.extra_loss(self, inputs, outputs, targets)
            if extra is not None:
                loss = loss + extra
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ConfigError("loss_fn and extra_loss must return a scalar tensor")
        value = float(loss.detach())
        if not math.isfinite(value):
            # stop before the step: one inf update would silently ruin the weights
            raise NetcompressError(
                f"loss became {value} at epoch {self.epoch} step {self.global_step + 1}; "
                f"lower the learning rate (lr={self.config.lr}) or set grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for cb in self.callbacks:
            cb.on_after_backward(self)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None and self._scheduler_per_step:
            self.scheduler.step()
        self.global_step += 1
        for cb in self.callbacks:
            cb.on_step_end(self, self.global_step, value)
        return value, batch_len(inputs, targets), count_correct(outputs, targets)

    def _run_epoch(self, epoch: int) -> None:
        cfg = self.config
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        self.model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        lr = float(self.optimizer.param_groups[0]["lr"])  # the lr the epoch starts with
        start = time.perf_counter()
        loss_sum, correct, counted, n = 0.0, 0, 0, 0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not self._show_progress(), file=sys.stderr, dynamic_ncols=True)
        try:
            for batch in self.train_loader:
                value, bs, hit = self._train_step(batch)
                loss_sum += value * bs
                n += bs
                if hit is not None:
                    correct += hit[0]
                    counted += hit[1]
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        finally:
            bar.close()
        if self.scheduler is not None and not self._scheduler_per_step:
            self.scheduler.step()
        loss_sum, correct, counted, n = D.all_reduce_sum([loss_sum, correct, counted, n])
        train = eval_result(loss_sum, correct, counted, n)
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train["loss"],
                                   "train_accuracy": train["accuracy"], "val_loss": None,
                                   "val_accuracy": None, "lr": lr}
        if self.val_data is not None:
            val = self._validate()
            metrics["val_loss"], metrics["val_accuracy"] = val["loss"], val["accuracy"]
        metrics["seconds"] = time.perf_counter() - start
        self.history.append(metrics)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, metrics)
        for key, value in metrics.items():
            # numpy scalars from callbacks would not load under weights_only=True; 0-d tensors
            # would keep a graph alive in the history
            if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.dim() == 0):
                metrics[key] = value.item()
        if self.is_main:
            logger.info("epoch %d/%d %s", epoch + 1, cfg.epochs, " ".join(
                f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        self._save(epoch)

    def _validate(self) -> dict[str, Any]:
        """Each rank evaluates a disjoint shard (no padding), then the sums are all-reduced, so the
        result equals the one-process evaluation exactly."""
        data = self.val_data
        if self.world_size > 1:
            data = Subset(data, range(self.rank, len(data), self.world_size))
        loader = DataLoader(data, batch_size=self.config.eval_batch_size, shuffle=False)
        loss_fn = self.loss_fn if self._custom_loss else cross_entropy
        return eval_result(*D.all_reduce_sum(eval_sums(self.model, loader, loss_fn)))
