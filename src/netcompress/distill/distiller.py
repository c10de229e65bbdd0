"""The teacher/student wrapper: a ``Callback`` that adds distillation terms to whatever the trainer
already optimises, so it is the fine-tuning loss of pruning, QAT, low-rank or early-exit training
without glue code::

    d = Distiller(teacher, student, [KD(temperature=4), AttentionTransfer([("layer2", "layer2")])])
    Trainer(student, data, config, callbacks=[d, *other_callbacks]).fit()

Total loss = task_weight * trainer.loss_fn(...) + sum of the weighted terms, where ``task_weight``
is ``KD.beta`` when a KD term is given, else 1. The teacher is frozen (eval mode, no gradients);
hooks on the student exist only between ``on_batch_start`` and ``extra_loss`` of a training step,
hooks on the teacher only during its forward.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..core.errors import CheckpointError, ConfigError, ModelError
from ..core.io import atomic_write, ensure_writable
from ..train import Callback, TrainConfig
from ..train.evaluation import logits_of, model_device
from ..train.trainer import build_optimizer
from . import losses as L
from .taps import FeatureTaps
from .terms import FSP, KD, AttentionTransfer, Hint, LogitRegression, Term, student_layers, teacher_layers

logger = logging.getLogger(__name__)

__all__ = ["Distiller", "TeacherCache", "teacher_fingerprint", "teacher_targets", "train_hints"]

Selector = Callable[[Any], "torch.Tensor | Sequence[torch.Tensor]"]


def _make_adapter(s_shape: torch.Size, t_shape: torch.Size, name: str) -> nn.Module:
    """A 1x1 conv (conv features) or a linear map (vectors) from student to teacher channels."""
    if len(s_shape) == 4 and len(t_shape) == 4:
        return nn.Conv2d(s_shape[1], t_shape[1], 1, bias=False)
    if len(s_shape) == 2 and len(t_shape) == 2:
        return nn.Linear(s_shape[1], t_shape[1], bias=False)
    raise ModelError(f"hint {name}: cannot build an adapter from a feature of shape {tuple(s_shape)} to "
                     f"one of shape {tuple(t_shape)}; tap two conv layers (B, C, H, W) or two linear "
                     "layers (B, F)")


class TeacherCache:
    """Per-sample teacher outputs on the CPU, keyed by a hash of the input's values: the logits and, per
    feature term, the teacher-side target it needs (see ``teacher_targets``): the attention energy map
    (H*W floats) for attention transfer, the flow matrix (C1*C2) for FSP, the whole map only for hints.

    Pass one instance as ``cache=`` to several Distillers of the same teacher to run the teacher once
    for all of them (e.g. comparing distillation methods on the same transfer set); ``save`` /
    ``load`` keep it on disk (safetensors) for later runs with the same teacher."""

    FORMAT = "netcompress-teacher-cache-1"

    def __init__(self):
        self.teacher: Optional[nn.Module] = None
        self.entries: dict[bytes, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def keys_for(x: torch.Tensor) -> list[bytes]:
        # a hash of the exact values (logical order, so channels-last batches give the same keys): equal
        # inputs hit in any process, and a float fingerprint cannot drift with the BLAS summation order
        rows = x.detach().flatten(1).to("cpu").contiguous().numpy()
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]

    def lookup(self, keys: list[bytes], names: Sequence[str]):
        """(logits, {target name: tensor}) stacked for ``keys``, or None when any of them is missing."""
        rows = [self.entries.get(k) for k in keys]
        if any(r is None or any(n not in r[1] for n in names) for r in rows):
            return None
        return torch.stack([r[0] for r in rows]), {n: torch.stack([r[1][n] for r in rows]) for n in names}

    def store(self, keys: list[bytes], logits: torch.Tensor, feats: dict[str, torch.Tensor]) -> None:
        logits = logits.detach().cpu()
        feats = {n: f.detach().cpu() for n, f in feats.items()}
        for i, k in enumerate(keys):
            old = self.entries.get(k, (None, {}))[1]
            # clone: a row view would keep the whole batch tensor alive
            self.entries[k] = (logits[i].clone(), {**old, **{n: f[i].clone() for n, f in feats.items()}})

    def save(self, path, teacher: Optional[nn.Module] = None, force: bool = False) -> Path:
        """Write the cache as safetensors, with a fingerprint of the teacher's weights that ``load`` checks."""
        from safetensors.torch import save_file

        teacher = teacher if teacher is not None else self.teacher
        if teacher is None:
            raise ConfigError("TeacherCache.save needs the teacher (to fingerprint it): pass teacher=")
        if not self.entries:
            raise ConfigError("the TeacherCache is empty; fill it (Distiller.precompute) before saving")
        path = ensure_writable(path, force)
        keys = list(self.entries)
        tensors = {"keys": torch.tensor([list(k) for k in keys], dtype=torch.uint8),
                   "logits": torch.stack([self.entries[k][0] for k in keys])}
        for name in sorted({n for _, t in self.entries.values() for n in t}):
            have = [k for k in keys if name in self.entries[k][1]]
            tensors[f"keys/{name}"] = torch.tensor([list(k) for k in have], dtype=torch.uint8)
            tensors[f"target/{name}"] = torch.stack([self.entries[k][1][name] for k in have])
        meta = {"format": self.FORMAT, "teacher": teacher_fingerprint(teacher)}
        return atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p), meta))

    @classmethod
    def load(cls, path, teacher: nn.Module) -> "TeacherCache":
        """Read a cache written by ``save``; refuses a file made by another teacher (weights fingerprint)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"teacher cache {path} does not exist; check the path or build it with "
                                  "Distiller.precompute() and TeacherCache.save()")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"teacher cache {path} is truncated or corrupt ({exc}); re-create it") from None
        if meta.get("format") != cls.FORMAT or "keys" not in tensors or "logits" not in tensors:
            raise CheckpointError(f"{path} is not a teacher cache written by TeacherCache.save")
        if meta.get("teacher") != teacher_fingerprint(teacher):
            raise ConfigError(f"teacher cache {path} was made by a teacher with other weights; rebuild it "
                              "for this teacher")
        cache = cls()
        cache.teacher = teacher
        as_keys = lambda t: [bytes(row) for row in t.tolist()]  # noqa: E731
        for k, logit in zip(as_keys(tensors["keys"]), tensors["logits"]):
            cache.entries[k] = (logit, {})
        for name in [k[len("target/"):] for k in tensors if k.startswith("target/")]:
            for k, value in zip(as_keys(tensors[f"keys/{name}"]), tensors[f"target/{name}"]):
                cache.entries[k][1][name] = value
        return cache


def teacher_fingerprint(model: nn.Module) -> str:
    """sha256 of the shapes and values of the model's weights and buffers, in order (names left out, so
    the same teacher inside a wrapper keeps its fingerprint)."""
    h = hashlib.sha256()
    for t in model.state_dict().values():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def teacher_targets(terms: Sequence[Term]) -> dict[str, tuple]:
    """Target name -> (kind, teacher layers, option) of every teacher-side target the terms need.

    Terms consume summaries of the teacher's maps, not the maps: caching C*H*W floats per sample and
    layer for a ResNet-56 on 55k images would take gigabytes, its summaries take far less."""
    out: dict[str, tuple] = {}
    for term in terms:
        if isinstance(term, Hint):
            out[f"feature:{term.teacher}"] = ("feature", (term.teacher,), None)
        elif isinstance(term, AttentionTransfer):
            for _, t in term.pairs:
                out[f"attention(p={term.p:g}):{t}"] = ("attention", (t,), term.p)
        elif isinstance(term, FSP):
            for _, (ta, tb) in term.pairs:
                out[f"fsp:{ta}|{tb}"] = ("fsp", (ta, tb), None)
    return out


def _summarise(targets: dict[str, tuple], feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, (kind, layers, option) in targets.items():
        if kind == "feature":
            out[name] = feats[layers[0]]
        elif kind == "attention":
            out[name] = L.attention_energy(feats[layers[0]], option)
        else:
            out[name] = L.fsp_matrix(feats[layers[0]], feats[layers[1]])
    return out


class _Modes:
    """Remember every module's train/eval flag and restore it (model.train() would un-freeze frozen BN)."""

    def __init__(self, *models: nn.Module):
        self.modes = [(m, m.training) for model in models for m in model.modules()]

    def restore(self) -> None:
        for m, flag in self.modes:
            m.training = flag


class Distiller(Callback):
    """Distil ``teacher`` into ``student`` with the given terms (see ``terms``).

    ``example_input``: a batch both models accept; checks the class counts and tap shapes up front,
    and is required to build the adapters of ``Hint`` terms. ``cache=True`` keeps the teacher's
    logits and the targets of the feature terms per sample on the CPU (keyed by a fingerprint of the
    input), so later epochs skip the teacher; only for inputs without random augmentation (each new
    input is a miss and is stored). Attention transfer caches H*W floats per sample and layer, FSP
    C1*C2 per pair, a hint the whole C*H*W map; a shared ``TeacherCache`` serves several Distillers. ``student_logits`` selects the logits from the
    student's outputs (default: the tensor, first of a tuple, or ``["logits"]``); it may return a
    list (one per early exit): logit terms are then averaged over the exits.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, terms: Any, *,
                 task_weight: Optional[float] = None, example_input: Optional[torch.Tensor] = None,
                 cache: "bool | TeacherCache" = False, student_logits: Optional[Selector] = None):
        terms = tuple(terms) if isinstance(terms, (list, tuple)) else (terms,)
        self._validate(teacher, student, terms, task_weight, cache)
        self.teacher, self.student, self.terms = teacher, student, terms
        kd = [t for t in terms if isinstance(t, KD)]
        self.task_weight = kd[0].beta if kd else (1.0 if task_weight is None else float(task_weight))
        self.select: Selector = student_logits or logits_of
        self.cache: Optional[TeacherCache] = cache if isinstance(cache, TeacherCache) else (
            TeacherCache() if cache else None)
        s_names = list(dict.fromkeys(n for t in terms for n in student_layers(t)))
        t_names = list(dict.fromkeys(n for t in terms for n in teacher_layers(t)))
        # resolving names here raises for a missing layer before anything is changed
        self._student_taps = FeatureTaps(student, s_names, "student")
        self._teacher_names = t_names
        FeatureTaps(teacher, t_names, "teacher")
        self._targets = teacher_targets(terms)
        self.adapters = nn.ModuleDict()
        if example_input is not None:
            self._probe(example_input)
        elif any(isinstance(t, Hint) and t.adapter for t in terms):
            raise ConfigError("Hint with adapter=True needs example_input= (a batch) to size the adapter "
                              "before training, so that the optimizer can include it")
        # freeze only after every check passed: a failed call leaves the caller's models untouched
        teacher.eval()
        teacher.requires_grad_(False)
        if self.cache is not None:
            self.cache.teacher = teacher

    # ----------------------------------------------------------------------------------- checks
    @staticmethod
    def _validate(teacher, student, terms, task_weight, cache) -> None:
        for role, m in (("teacher", teacher), ("student", student)):
            if not isinstance(m, nn.Module):
                raise ConfigError(f"{role} must be an nn.Module; got {type(m).__name__}")
        if isinstance(cache, TeacherCache) and cache.teacher is not None and cache.teacher is not teacher:
            raise ConfigError("this TeacherCache holds another teacher's outputs; use one cache per teacher")
        if teacher is student:
            raise ConfigError("teacher and student are the same module; distil from a separate (copied) model")
        if not terms:
            raise ConfigError("no distillation terms; give e.g. KD(temperature=4.0)")
        bad = [type(t).__name__ for t in terms if not isinstance(t, Term)]
        if bad:
            raise ConfigError(f"unknown distillation term(s) {bad}; use KD, LogitRegression, Hint, AttentionTransfer or FSP")
        kd = [t for t in terms if isinstance(t, KD)]
        if len(kd) > 1:
            raise ConfigError("give one KD term (it sets the hard-label weight beta)")
        if kd and task_weight is not None:
            raise ConfigError("task_weight conflicts with KD.beta, which already weights the task loss; "
                              "set it in KD(beta=...)")
        if task_weight is not None and (isinstance(task_weight, bool) or not isinstance(task_weight, (int, float))
                                        or not task_weight >= 0):
            raise ConfigError(f"task_weight must be a number >= 0; got {task_weight!r}")

    @torch.no_grad()
    def _probe(self, x: torch.Tensor) -> None:
        """Run both models once (eval mode, modes restored) to check classes and shapes, size adapters."""
        modes = _Modes(self.student, self.teacher)
        try:
            self.student.eval()
            self.teacher.eval()
            with self._student_taps:
                s_logits = self.select(self.student(x.to(model_device(self.student))))
                s_feats = {n: self._student_taps[n] for n in self._student_taps.modules}
            t_logits, t_targets = self._teacher_forward(x)
        finally:
            modes.restore()
        for logit in (s_logits if isinstance(s_logits, (list, tuple)) else [s_logits]):
            L._check_logits(logit, t_logits.to(logit.device))
        for i, term in enumerate(self.terms):
            if isinstance(term, Hint) and term.adapter:
                name = f"{term.student}->{term.teacher}"
                adapter = _make_adapter(s_feats[term.student].shape, t_targets[f"feature:{term.teacher}"].shape, name)
                self.adapters[str(i)] = adapter.to(model_device(self.student))
        self._term_losses(s_feats, t_targets)  # raises for shapes that cannot be matched

    # ------------------------------------------------------------------------------- forwards
    def _teacher_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, teacher targets) of one batch; see ``teacher_targets``."""
        if self.teacher.training:
            self.teacher.eval()  # someone called teacher.train(); dropout/BN updates would corrupt targets
        x = x.to(model_device(self.teacher))
        with torch.no_grad(), FeatureTaps(self.teacher, self._teacher_names, "teacher") as taps:
            logits = logits_of(self.teacher(x))
            if logits is None:
                raise ModelError("the teacher's output holds no logits (a tensor, first of a tuple, or "
                                 "dict['logits'])")
            feats = {n: taps[n] for n in self._teacher_names}
            targets = _summarise(self._targets, feats)
        return logits, targets

    def teacher_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The frozen teacher's (logits, targets of the terms) for ``x``, from the cache when enabled and
        filled. Targets: ``feature:<layer>`` (hints), ``attention(p=2):<layer>`` (energy maps (B, H, W)),
        ``fsp:<a>|<b>`` (flow matrices (B, C1, C2))."""
        if self.cache is None:
            return self._teacher_forward(x)
        keys = self.cache.keys_for(x)
        hit = self.cache.lookup(keys, list(self._targets))
        if hit is not None:
            return hit
        logits, feats = self._teacher_forward(x)
        self.cache.store(keys, logits, feats)
        return logits, feats

    def precompute(self, data, batch_size: int = 256) -> int:
        """Fill the cache with the teacher's outputs for every sample of ``data`` (a map-style Dataset of
        (inputs, targets)); returns the number of cached samples."""
        if self.cache is None:
            raise ConfigError("precompute() needs a Distiller built with cache=True (or a TeacherCache)")
        for x, _ in torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False):
            self.teacher_outputs(x)
        return len(self.cache)

    # ---------------------------------------------------------------------------------- losses
    def _term_losses(self, s_feats: dict, t_targets: dict, s_logits=None, t_logits=None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        exits = s_logits if isinstance(s_logits, (list, tuple)) else [s_logits]
        for i, term in enumerate(self.terms):
            if isinstance(term, (KD, LogitRegression)):
                if s_logits is None:
                    continue
                t = t_logits.to(exits[0].device)
                if isinstance(term, KD):
                    val = sum(L.kd_loss(s, t, term.temperature) for s in exits) / len(exits)
                    out["kd"] = term.alpha * val
                else:
                    val = sum(L.logit_regression_loss(s, t) for s in exits) / len(exits)
                    out["logit_regression"] = term.weight * val
            elif isinstance(term, Hint):
                s = s_feats[term.student]
                if str(i) in self.adapters:
                    s = self.adapters[str(i)](s)
                t = t_targets[f"feature:{term.teacher}"].to(s.device)
                out[f"hint:{term.student}"] = term.weight * L.hint_loss(s, t)
            elif isinstance(term, AttentionTransfer):
                val = 0.0
                for s, t in term.pairs:
                    if s_feats[s].dim() != 4:  # the teacher side is a (B, H, W) summary by now
                        raise ModelError(f"attention transfer: cannot match a {s_feats[s].dim()}-d feature "
                                         f"{tuple(s_feats[s].shape)} (student {s!r}) with the teacher's conv "
                                         f"map {t!r}; tap layers of the same kind (both conv)")
                    t_energy = t_targets[f"attention(p={term.p:g}):{t}"].to(s_feats[s].device)
                    val = val + L.attention_loss_from_energy(L.attention_energy(s_feats[s], term.p), t_energy)
                out["attention"] = term.weight * val
            elif isinstance(term, FSP):
                val = 0.0
                for (sa, sb), (ta, tb) in term.pairs:
                    t = t_targets[f"fsp:{ta}|{tb}"].to(s_feats[sa].device)
                    val = val + L.fsp_loss_from_matrix((s_feats[sa], s_feats[sb]), t)
                out["fsp"] = term.weight * val
        return out

    def losses(self, inputs: torch.Tensor, outputs: Any) -> dict[str, torch.Tensor]:
        """The weighted distillation terms for one student forward (whose taps must have been attached)."""
        s_logits = self.select(outputs)
        if s_logits is None:
            raise ModelError("cannot find logits in the student's outputs; pass student_logits=")
        s_feats = {n: self._student_taps[n] for n in self._student_taps.modules}
        t_logits, t_targets = self.teacher_outputs(inputs)
        return self._term_losses(s_feats, t_targets, s_logits, t_logits)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor,
             task_loss: Callable[[Any, Any, Any], torch.Tensor] = None) -> torch.Tensor:
        """For a hand-written loop: student forward + total loss (``task_loss`` defaults to cross-entropy)."""
        with self._student_taps:
            outputs = self.student(inputs)
            terms = self.losses(inputs, outputs)
        task = (task_loss or (lambda o, t, i: F.cross_entropy(logits_of(o), t)))(outputs, targets, inputs)
        return self.task_weight * task + sum(terms.values())

    # ------------------------------------------------------------------------ trainer callback
    def parameters(self):
        """Trainable parameters of the distiller itself (FitNet adapters)."""
        return self.adapters.parameters()

    def build_optimizer(self, config: TrainConfig) -> torch.optim.Optimizer:
        """An optimizer over the student's parameters and the adapters, as ``Trainer(optimizer=...)``."""
        return build_optimizer(nn.ModuleList([self.student, self.adapters]), config)

    def on_fit_start(self, trainer) -> None:
        if trainer.model is not self.student:
            raise ConfigError("the trainer trains a different model than this Distiller's student")
        in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        missing = sum(p.numel() for p in self.adapters.parameters() if id(p) not in in_opt)
        if missing:
            raise ConfigError(f"the distiller's adapters ({missing} parameters) are not in the optimizer; "
                              "pass Trainer(..., optimizer=distiller.build_optimizer(config))")
        self.adapters.train()

    def on_batch_start(self, trainer, inputs, targets) -> None:
        self._student_taps.release()
        self._student_taps.attach()

    def extra_loss(self, trainer, inputs, outputs, targets) -> Optional[torch.Tensor]:
        try:
            terms = self.losses(inputs, outputs)
        finally:
            self._student_taps.release()
        total = sum(terms.values())
        if self.task_weight != 1.0:
            # the trainer already added 1 x its task loss; re-weighting it here keeps the trainer's loss_fn
            # (pruning, QAT, early-exit losses) in charge of what the task loss is
            total = total + (self.task_weight - 1.0) * trainer.loss_fn(outputs, targets, inputs)
        return total

    def on_after_backward(self, trainer) -> None:
        # adapters live outside the DDP-wrapped student, so average their gradients by hand
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.adapters.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()

    def on_fit_end(self, trainer) -> None:
        self._student_taps.release()

    def state_dict(self) -> dict:
        return {"adapters": {k: v.detach().cpu() for k, v in self.adapters.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("adapters"):
            self.adapters.load_state_dict(state["adapters"])


def _no_task_loss(outputs, targets, inputs) -> torch.Tensor:
    return torch.zeros((), device=logits_of(outputs).device)


def train_hints(teacher: nn.Module, student: nn.Module, train_data, hints: Any, config: TrainConfig,
                example_input: torch.Tensor, cache: "bool | TeacherCache" = False, **trainer_kwargs) -> list[dict]:
    """FitNet stage 1 (Romero et al. 2015): train the student's layers up to each guided layer, plus
    the adapters, on the hint loss alone. Layers past the guided layer are left exactly as they were
    (they are not in the optimizer, so weight decay cannot shrink them either). Follow with a KD run
    (stage 2). Returns the trainer's history."""
    from ..train import Trainer

    hints = tuple(hints) if isinstance(hints, (list, tuple)) else (hints,)
    if not hints or not all(isinstance(h, Hint) for h in hints):
        raise ConfigError(f"train_hints needs Hint terms; got {[type(h).__name__ for h in hints]}")
    d = Distiller(teacher, student, hints, example_input=example_input, cache=cache)
    modes = _Modes(student)
    try:
        student.eval()  # find the parameters the hints reach without touching BN statistics
        with d._student_taps:
            outputs = student(example_input.to(model_device(student)))
            loss = sum(d.losses(example_input, outputs).values())
        params = [p for p in student.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        modes.restore()
    reached = [p for p, g in zip(params, grads) if g is not None]
    hit = {id(p) for p in reached}
    # modules past the guided layer still run forward; eval mode keeps their BN statistics as they were
    frozen = [m for m in student.modules()
              if any(True for _ in m.parameters(recurse=False)) and not any(id(p) in hit for p in m.parameters(recurse=False))]
    optimizer = build_optimizer(nn.ParameterList(reached + list(d.parameters())), config)
    logger.info("FitNet stage 1: %d of %d student tensors before the guided layer(s), %d adapter tensors",
                len(reached), len(params), len(list(d.parameters())))
    return Trainer(student, train_data, config, loss_fn=_no_task_loss, callbacks=[d, _EvalModules(frozen)],
                   optimizer=optimizer, **trainer_kwargs).fit()


class _EvalModules(Callback):
    def __init__(self, modules: list[nn.Module]):
        self.modules = modules

    def on_epoch_start(self, trainer, epoch: int) -> None:
        for m in self.modules:
            m.eval()

    def on_fit_end(self, trainer) -> None:
        for m in self.modules:
            m.train()
