"""Run a recipe into a run directory: baseline, stages in order, final measurements, report.

Run directory::

    .netcompress-run   marker: format and run id    .netcompress-lock  flock()ed by the process writing the run
    recipe.yaml        the recipe as given          run.json      progress: finished stages, artifacts
    log.txt            the run's log                metrics.jsonl one JSON event per line (epochs, stages)
    checkpoints/       baseline.safetensors, <stage>.pt after each finished stage, <stage>/last.pt per epoch
    artifacts/         model.onnx, model.safetensors, ... (the deployable files)
    metrics.json       baseline and final blocks {accuracy, params, nonzero_params, macs, bytes_on_disk, latency_ms}
    report.html/.md    the report

Resume: finished stages are not re-run; their structure is rebuilt (``restore``) and their saved
weights loaded; an interrupted fine-tune continues from its last epoch checkpoint. Every file is
written atomically, so a SIGKILL at any point leaves a resumable directory.

``--force`` replaces only a directory holding netcompress's marker (whose run id matches run.json's),
never one holding the run's own inputs; anything else is refused and nothing is deleted.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from ..core.errors import CheckpointError, OutputExistsError, RunLockedError
from ..core.io import atomic_torch_save, atomic_write, output_error, safe_torch_load, save_weights
from .context import RunContext, build_model, load_splits, resolve_factory, resolve_path
from .registry import stage_type
from .schema import Recipe, loads_recipe, read_recipe_text, recipe_to_dict

log = logging.getLogger(__name__)

STATE_FORMAT = "netcompress.run/1"
MARKER = ".netcompress-run"      # written first into every run directory: {"format", "run_id", "created"}
MARKER_FORMAT = "netcompress.run-dir/1"
LOCK = ".netcompress-lock"       # flock()ed by the one process writing the directory; the OS frees it on death
_BOOKKEEPING = re.compile(r"^(\.netcompress-lock|\.netcompress-run|\.\.netcompress-run\..*\.tmp)$")
_STALE_TMP = re.compile(r"^\..+\.tmp(\.data)?$")  # atomic_write's temporary files, left by a killed process


def _recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe_to_dict(recipe), sort_keys=True).encode()).hexdigest()[:16]


def read_marker(out: Path) -> Optional[dict]:
    """The run marker netcompress wrote into ``out``, or None if absent or not one of ours."""
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT
            and isinstance(marker.get("run_id"), str) and re.fullmatch(r"[0-9a-f]{32}", marker["run_id"])):
        return marker
    return None


def _read_state(out: Path) -> Optional[dict]:
    try:
        state = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) else None


def _is_ours(out: Path) -> bool:
    """``out`` holds netcompress's marker, and its run.json (if any) carries the same run id."""
    marker = read_marker(out)
    if marker is None:
        return False
    if not (out / "run.json").exists():
        return True
    state = _read_state(out)
    return state is not None and state.get("run_id") == marker["run_id"]


def _entries(out: Path) -> list[Path]:
    """What ``out`` holds besides the lock and marker files (a run killed while starting leaves only those)."""
    return [p for p in out.iterdir() if not _BOOKKEEPING.match(p.name)]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def check_run_dir(out: Path, recipe: Recipe, resume: bool, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse an unusable ``--out`` before anything loads (no side effects): a file, a symbolic link, a
    non-empty directory without --resume/--force, --force on a directory netcompress did not create (it
    deletes nothing it did not create) or one holding the run's own inputs, --resume of another recipe."""
    if out.is_symlink():
        raise OutputExistsError(f"--out {out} is a symbolic link (to {os.readlink(out)}); netcompress writes only "
                                "into a real directory: pass the directory itself")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; choose a directory for --out")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputExistsError(f"--out {out}: {parent} is a file, so the directory cannot be created there; "
                                "choose another --out")
    if not out.exists() or not _entries(out):
        return
    if resume and (out / "run.json").is_file():
        if not _is_ours(out):
            raise CheckpointError(f"cannot resume {out}: it has no run marker ({MARKER}) matching its run.json, so "
                                  "netcompress did not create it; choose a new --out")
        state = _read_state(out)
        if state is None:
            raise CheckpointError(f"{out / 'run.json'} is unreadable; start a new run with --force")
        if state.get("format") != STATE_FORMAT or state.get("recipe_hash") != _recipe_hash(recipe):
            raise CheckpointError(f"cannot resume {out}: it was started with a different recipe (or --weights, "
                                  "--data-dir); use the original ones, or a new --out")
        return
    if not force:
        hint = "pass --resume to continue it, or " if (out / "run.json").is_file() else ""
        raise OutputExistsError(f"run directory {out} exists and is not empty; {hint}pass --force to "
                                "replace it, or choose another --out")
    if not _is_ours(out):
        raise OutputExistsError(f"{out} was not created by netcompress (no valid {MARKER} marker); refusing to "
                                "delete it even with --force; choose another --out")
    for path in inputs:
        if path is not None and _inside(path, out):
            raise OutputExistsError(f"{path} is inside --out {out}, which --force would delete; move it out first "
                                    "or choose another --out")


class RunLock:
    """An exclusive ``flock`` on ``out/.netcompress-lock`` for the run's lifetime: a second writer of the same
    run directory is refused; a killed process's lock is released by the OS, so it never blocks a resume."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise output_error(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(f"another netcompress process (pid {holder}) is writing {self.path.parent}; wait "
                                 "for it to finish (or stop it), or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _clear(out: Path) -> None:
    """Delete a run directory's contents (--force on a directory netcompress created), keeping the held lock."""
    for entry in out.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check_no_links(out: Path) -> None:
    """A run directory netcompress writes into holds no symbolic links (it never makes any): one planted there
    would redirect an append to log.txt or metrics.jsonl outside ``out``."""
    for path in out.rglob("*"):
        if path.is_symlink():
            raise OutputExistsError(f"{path} is a symbolic link; netcompress never creates those in a run "
                                    "directory, so this one was changed by hand: remove the link or choose a new --out")


def open_run_dir(out: Path, recipe: Recipe, resume: bool, force: bool, inputs: Iterable[Path] = ()) -> tuple[dict, RunLock]:
    """Create (or reopen, for resume) the run directory once everything has loaded; returns the saved state
    (empty for a new run) and the held lock. Replaces a directory (--force) only if netcompress created it."""
    inputs = list(inputs)
    check_run_dir(out, recipe, resume, force, inputs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(out, exc) from None
    lock = RunLock(out).acquire()
    try:
        check_run_dir(out, recipe, resume, force, inputs)  # again, under the lock: another process may have started
        state: dict = {}
        if resume and (out / "run.json").is_file():
            _check_no_links(out)
            state = _read_state(out) or {}
            for path in out.rglob("*"):
                if path.is_file() and _STALE_TMP.match(path.name) and not _BOOKKEEPING.match(path.name):
                    path.unlink()
        elif _entries(out):  # force, checked above: ours and not holding an input
            _clear(out)
        if read_marker(out) is None or not state:
            marker = {"format": MARKER_FORMAT, "run_id": uuid.uuid4().hex, "created": round(time.time(), 3)}
            text = json.dumps(marker)
            atomic_write(out / MARKER, lambda p: p.write_text(text, encoding="utf-8"))
        return state, lock
    except BaseException:
        lock.release()
        raise


def check_resume_checkpoints(out: Path) -> None:
    """Before a resume loads anything: every checkpoint in ``out`` loads, else the error names the file and a fix
    that exists (an epoch checkpoint can be deleted: that stage restarts; a finished stage's cannot)."""
    from ..core.io import load_weights

    folder = out / "checkpoints"
    for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
        if not path.is_file() or path.suffix not in (".pt", ".safetensors"):
            continue
        fix = ("delete it and --resume again (that stage restarts from its first epoch), or start over with --force"
               if path.parent != folder else "the stage it finished cannot be restored without it: start over with "
               "--force, or use a new --out")
        try:
            if path.suffix == ".pt":
                safe_torch_load(path, "checkpoint", fix)
            else:
                load_weights(path)
        except CheckpointError as exc:
            if path.suffix == ".pt":
                raise
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt; {fix}") from exc


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
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
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


def _effective(recipe: Recipe, new: Recipe, note: str) -> tuple[Recipe, str]:
    """``new`` and the text to keep as the run's recipe.yaml (the effective recipe, so a resume sees what ran)."""
    import yaml

    return new, f"# {recipe.source} {note}\n" + yaml.safe_dump(recipe_to_dict(new), sort_keys=False)


def with_weights(recipe: Recipe, weights: str | Path, recipe_text: Optional[str] = None) -> tuple[Recipe, str]:
    """``recipe`` starting from the trained ``weights`` file (no pretraining); returns it and the text
    to keep as the run's recipe.yaml (the effective recipe, so a resume sees what really ran)."""
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"--weights {weights}: no such file")
    model = recipe.model.model_copy(update={"weights": str(path), "pretrain": None})
    return _effective(recipe, recipe.model_copy(update={"model": model}),
                      f"with model.weights = {path} (--weights), model.pretrain dropped")


def with_data_dir(recipe: Recipe, data_dir: str | Path) -> tuple[Recipe, str]:
    """``recipe`` reading its data from ``data_dir`` (``compress --data-dir``; relative to the current folder)."""
    path = Path(data_dir).expanduser().resolve()
    data = recipe.data.model_copy(update={"data_dir": str(path)})
    return _effective(recipe, recipe.model_copy(update={"data": data}), f"with data.data_dir = {path} (--data-dir)")


def run_recipe(recipe: Recipe | str | Path, out: str | Path, *, resume: bool = False, force: bool = False,
               trusted: tuple[str, ...] = (), progress: bool = True, recipe_text: Optional[str] = None,
               measure_final: bool = True, weights: str | Path | None = None,
               data_dir: str | Path | None = None) -> Optional[dict]:
    """Run ``recipe`` into directory ``out``; returns the metrics.json content (None on non-main ranks).

    ``weights``: start from this trained weights file instead of the recipe's ``model.weights`` or
    ``model.pretrain`` (the model you already trained, the recipe's compression on top of it).
    ``data_dir``: read the recipe's data from this folder (relative paths in the recipe file itself are
    taken from the recipe's folder).

    Order: the recipe, its factory (refused unless a model builder), the data and the model with its weights
    all load before ``out`` is created, so a failed start leaves nothing behind; then ``out`` is created with
    a run marker and locked (a second writer is refused).

    >>> # see recipes/*.yaml and ``netcompress compress --help``
    """
    from ..train import rank, seed_everything

    base_dir = recipe_file = None
    if not isinstance(recipe, Recipe):
        recipe_file = Path(recipe)
        recipe_text = read_recipe_text(recipe_file)
        recipe = loads_recipe(recipe_text, str(recipe_file))
        base_dir = recipe_file.resolve().parent
    if weights is not None:
        recipe, recipe_text = with_weights(recipe, weights, recipe_text)
    if data_dir is not None:
        recipe, recipe_text = with_data_dir(recipe, data_dir)
    resolve_factory(recipe.model, tuple(trusted))  # refused here, before anything is loaded or written
    out = Path(out)
    is_main = rank() == 0
    inputs = [recipe_file] + [resolve_path(p, base_dir) for p in (recipe.model.weights, recipe.data.data_dir) if p]
    if is_main:
        check_run_dir(out, recipe, resume, force, inputs)
        if resume and (out / "run.json").is_file():
            check_resume_checkpoints(out)
    seed_everything(recipe.seed)
    splits = load_splits(recipe.data, base_dir)
    torch.manual_seed(recipe.seed)  # the same initial weights on every rank and every resume
    model = build_model(recipe.model, splits.input_shape, splits.num_classes, trusted, base_dir)
    lock = None
    if is_main:  # everything has loaded: only now does the run directory appear
        state, lock = open_run_dir(out, recipe, resume, force, inputs)
    else:  # rank 0 owns the directory; the others only read it
        state = (_read_state(out) or {}) if resume and (out / "run.json").is_file() else {}
    try:
        return _run(recipe, out, model, splits, state, recipe_text, is_main=is_main, progress=progress,
                    trusted=tuple(trusted), base_dir=base_dir, measure_final=measure_final)
    finally:
        if lock is not None:
            lock.release()


def _run(recipe: Recipe, out: Path, model, splits, state: dict, recipe_text: Optional[str], *, is_main: bool,
         progress: bool, trusted: tuple, base_dir: Optional[Path], measure_final: bool) -> Optional[dict]:
    from ..train import seed_everything

    resume = bool(state)
    if not state:
        marker = read_marker(out) if is_main else None
        state = {"format": STATE_FORMAT, "recipe_hash": _recipe_hash(recipe), "completed": [],
                 "run_id": marker["run_id"] if marker else None}
    if is_main and not (out / "recipe.yaml").exists():
        import yaml

        text = recipe_text or yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
        atomic_write(out / "recipe.yaml", lambda p: p.write_text(text, encoding="utf-8"))

    with _RunLog(out / "log.txt", is_main):
        log.info("run %s: %s (%s; data %s)", "resumed" if resume else "started", out, recipe.source, splits.label)
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
