"""Run a recipe into a run directory: baseline, stages in order, final measurements, report.

Run directory::

    recipe.yaml        the recipe as given          run.json      progress: finished stages, artifacts
    log.txt            the run's log                metrics.jsonl one JSON event per line (epochs, stages)
    checkpoints/       baseline.safetensors, <stage>.pt after each finished stage, <stage>/last.pt per epoch
    artifacts/         model.onnx, model.safetensors, ... (the deployable files)
    metrics.json       baseline and final blocks {accuracy, params, nonzero_params, macs, bytes_on_disk, latency_ms}
    report.html/.md    the report

Resume: finished stages are not re-run; their structure is rebuilt (``restore``) and their saved
weights loaded; an interrupted fine-tune continues from its last epoch checkpoint. Every file is
written atomically, so a SIGKILL at any point leaves a resumable directory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.errors import CheckpointError, OutputExistsError
from ..core.io import atomic_torch_save, atomic_write, safe_torch_load, save_weights
from .context import RunContext, build_model, check_trusted, load_splits
from .registry import stage_type
from .schema import Recipe, load_recipe, recipe_to_dict

log = logging.getLogger(__name__)

STATE_FORMAT = "netcompress.run/1"


def _recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe_to_dict(recipe), sort_keys=True).encode()).hexdigest()[:16]


def prepare_run_dir(out: Path, recipe: Recipe, resume: bool, force: bool) -> dict:
    """Create/validate the run directory; returns the saved state (empty for a new run)."""
    state_path = out / "run.json"
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; choose a directory for --out")
    if out.exists() and any(out.iterdir()):
        if resume and state_path.is_file():
            try:
                state = json.loads(state_path.read_text())
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{state_path} is unreadable ({exc}); start a new run with --force") from None
            if state.get("format") != STATE_FORMAT or state.get("recipe_hash") != _recipe_hash(recipe):
                raise CheckpointError(f"cannot resume {out}: it was started with a different recipe (or --weights); "
                                      "use the original ones, or a new --out")
            return state
        if not force:
            hint = "pass --resume to continue it, or " if state_path.is_file() else ""
            raise OutputExistsError(f"run directory {out} exists and is not empty; {hint}pass --force to "
                                    "replace it, or choose another --out")
        if not state_path.is_file():
            # --force deletes only what is recognisably a run directory
            raise OutputExistsError(f"{out} is not a netcompress run directory (no run.json); refusing to "
                                    "delete it even with --force; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return {}


class _RunLog:
    """Route the package's log records to log.txt for the duration of the run."""

    def __init__(self, path: Path, enabled: bool):
        self.handler = logging.FileHandler(path, encoding="utf-8") if enabled else None

    def __enter__(self):
        if self.handler:
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            self.handler.setLevel(logging.INFO)
            root = logging.getLogger("netcompress")
            self._old_level = root.level
            root.addHandler(self.handler)
            if root.getEffectiveLevel() > logging.INFO:
                root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        if self.handler:
            root = logging.getLogger("netcompress")
            root.removeHandler(self.handler)
            root.setLevel(self._old_level)
            self.handler.close()


def _stage_point(ctx: RunContext, label: str) -> dict:
    """Accuracy, size and torch latency of the current model: one point of the per-stage plots."""
    from ..measure import analyze, measure_latency
    from ..train import evaluate

    stats = analyze(ctx.model, ctx.example_input)
    ckpt = ctx.run_dir / "checkpoints" / (f"{label}.pt" if label != "baseline" else "baseline.safetensors")
    deploy = ctx.state.get("deploy")
    path = ctx.artifact(deploy) if deploy else None
    m = ctx.recipe.measure
    lat = measure_latency(ctx.model, ctx.example_input, warmup=2, repeats=max(3, m.latency_repeats // 3),
                          threads=m.threads)
    return {"stage": label, "accuracy": evaluate(ctx.model, ctx.splits.test)["accuracy"],
            "params": stats.totals["params"], "nonzero_params": stats.totals["nonzero_params"], "macs": stats.totals["macs"],
            "bytes_on_disk": (path or ckpt).stat().st_size if (path or ckpt).exists() else None,
            "bytes_kind": deploy if path else "checkpoint", "latency_ms_torch": lat.median_ms}


def _save_model_state(ctx: RunContext, path: Path) -> None:
    if ctx.is_main:
        atomic_torch_save({k: v.detach().clone() for k, v in ctx.model.state_dict().items()}, path)


def _load_model_state(ctx: RunContext, path: Path) -> None:
    state = safe_torch_load(path)
    try:
        ctx.model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the model rebuilt for resume "
                              f"({str(exc).splitlines()[0]}); start the run again with --force") from None


def _baseline(ctx: RunContext) -> None:
    path = ctx.run_dir / "checkpoints" / "baseline.safetensors"
    spec = ctx.recipe.model
    if ctx.state.get("baseline_done") and path.is_file():
        from ..core.io import load_weights_into

        load_weights_into(ctx.model, path)
        return
    if spec.pretrain is not None:
        from .stages import train_model

        ctx.log_event("stage_start", stage="baseline")
        train_model(ctx, spec.pretrain, ctx.stage_dir, ctx.recipe.seed)
    if ctx.is_main:
        save_weights(ctx.model, path, force=True)
        ctx.state["baseline_point"] = _stage_point(ctx, "baseline")
        ctx.state["baseline_done"] = True
        ctx.save_state()
        ctx.log_event("stage_end", **ctx.state["baseline_point"])


def with_weights(recipe: Recipe, weights: str | Path, recipe_text: Optional[str] = None) -> tuple[Recipe, str]:
    """``recipe`` starting from the trained ``weights`` file (no pretraining); returns it and the text
    to keep as the run's recipe.yaml (the effective recipe, so a resume sees what really ran)."""
    import yaml

    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"--weights {weights}: no such file")
    model = recipe.model.model_copy(update={"weights": str(path), "pretrain": None})
    new = recipe.model_copy(update={"model": model})
    note = f"# {recipe.source} with model.weights = {path} (--weights), model.pretrain dropped\n"
    return new, note + yaml.safe_dump(recipe_to_dict(new), sort_keys=False)


def run_recipe(recipe: Recipe | str | Path, out: str | Path, *, resume: bool = False, force: bool = False,
               trusted: tuple[str, ...] = (), progress: bool = True, recipe_text: Optional[str] = None,
               measure_final: bool = True, weights: str | Path | None = None) -> Optional[dict]:
    """Run ``recipe`` into directory ``out``; returns the metrics.json content (None on non-main ranks).

    ``weights``: start from this trained weights file instead of the recipe's ``model.weights`` or
    ``model.pretrain`` (the model you already trained, the recipe's compression on top of it).

    >>> # see recipes/*.yaml and ``netcompress compress --help``
    """
    from ..train import rank, seed_everything

    base_dir = None
    if not isinstance(recipe, Recipe):
        base_dir = Path(recipe).resolve().parent
        recipe_text = Path(recipe).read_text(encoding="utf-8")
        recipe = load_recipe(recipe)
    if weights is not None:
        recipe, recipe_text = with_weights(recipe, weights, recipe_text)
    check_trusted(recipe.model, tuple(trusted))
    out = Path(out)
    is_main = rank() == 0
    if is_main:
        state = prepare_run_dir(out, recipe, resume, force)
    else:  # rank 0 owns the directory; the others only read it
        state = json.loads((out / "run.json").read_text()) if resume and (out / "run.json").is_file() else {}
    resume = bool(state)
    if not state:
        state = {"format": STATE_FORMAT, "recipe_hash": _recipe_hash(recipe), "completed": []}
    if is_main and not (out / "recipe.yaml").exists():
        import yaml

        text = recipe_text or yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
        atomic_write(out / "recipe.yaml", lambda p: p.write_text(text, encoding="utf-8"))

    with _RunLog(out / "log.txt", is_main):
        log.info("run %s: %s (%s)", "resumed" if resume else "started", out, recipe.source)
        seed_everything(recipe.seed)
        splits = load_splits(recipe.data)
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank and every resume
        model = build_model(recipe.model, splits.input_shape, splits.num_classes, trusted, base_dir)
        ctx = RunContext(recipe, out, model, splits, torch.zeros(1, *splits.input_shape), resume=resume,
                         is_main=is_main, progress=progress, trusted=tuple(trusted), base_dir=base_dir,
                         state=state)
        ctx.save_state()
        _baseline(ctx)
        for stage in recipe.stage_list:
            ctx.stage = stage
            st = stage_type(stage.type)
            ckpt = out / "checkpoints" / f"{stage.name}.pt"
            if stage.name in ctx.state["completed"]:
                if st.restore is not None:
                    seed_everything(recipe.seed + 1 + stage.index)
                    st.restore(ctx, stage.params)
                _load_model_state(ctx, ckpt)
                log.info("stage %s: finished earlier, restored from %s", stage.name, ckpt)
                continue
            log.info("stage %s: start", stage.name)
            ctx.log_event("stage_start", stage=stage.name, type=stage.type)
            seed_everything(recipe.seed + 1 + stage.index)
            st.run(ctx, stage.params)
            _save_model_state(ctx, ckpt)
            if is_main:
                ctx.state.setdefault("points", {})[stage.name] = point = _stage_point(ctx, stage.name)
                ctx.state["completed"].append(stage.name)
                ctx.save_state()
                ctx.log_event("stage_end", **point)
            else:
                ctx.state["completed"].append(stage.name)
        ctx.stage = None
        if not is_main:
            return None
        if not measure_final:
            return ctx.state
        from .final import finish

        return finish(ctx)


def run_state(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "run.json").read_text())
