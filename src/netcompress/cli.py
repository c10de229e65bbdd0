"""The ``netcompress`` command: parses options (each range-checked), calls the API, prints.

Every error a user can cause prints one line ``netcompress CMD: error: ...`` naming the thing and the
fix, and exits 2; nothing is overwritten without ``--force``."""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from .core.errors import ConfigError, DiskFullError, NetcompressError

log = logging.getLogger("netcompress")

DESCRIPTION = ("Make a trained PyTorch network smaller and faster (pruning, quantization, distillation, low-rank) "
               "and measure what it costs in accuracy, size and latency.")
MAX_DIM = 1 << 20  # one input size; a zoo model at this size already needs terabytes


class UsageError(NetcompressError):
    """A command-line option is malformed or out of range (argparse's error, as one line)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting: the CLI prints one line."""

    def error(self, message):
        raise UsageError(self.prog, message)


class _Help(argparse.HelpFormatter):
    """Help text with each option's default appended (options whose default is None say it in words)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" not in text and "default" not in text and action.default is not None
                and action.default is not False and action.default is not argparse.SUPPRESS and action.option_strings):
            text += " (default: %(default)s)"
        return text


def int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}; got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}; got {value}")
        return value
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"must be in {'(' if lo_open else '['}{lo}, {hi}]; got {text}")
        return value
    return parse


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,1,28,28`` -> (1, 1, 28, 28): 2 to 6 positive sizes, each at most MAX_DIM."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {text[:60]!r} is not a comma-separated list of integers, "
                          "e.g. 1,1,28,28") from None
    if not 2 <= len(shape) <= 6 or any(v < 1 for v in shape):
        raise ConfigError(f"--input-shape {text[:60]!r} must have 2 to 6 positive sizes (batch first), e.g. 1,1,28,28")
    if any(v > MAX_DIM for v in shape):
        raise ConfigError(f"--input-shape {text[:60]!r}: each size must be at most {MAX_DIM:,}; "
                          "pass the shape of one real input, e.g. 1,3,32,32")
    return shape


def _activation_bytes(meta_model, shape: tuple[int, ...]) -> int:
    """The largest layer output of a forward pass on the meta device (shapes only, no memory); 0 if the
    forward fails there (the real forward then reports the problem)."""
    import torch

    sizes = [0]
    hooks = [m.register_forward_hook(lambda m, a, out: sizes.append(out.numel() * out.element_size()
                                                                    if isinstance(out, torch.Tensor) else 0))
             for m in meta_model.modules()]
    try:
        with torch.no_grad():
            meta_model(torch.empty(shape, device="meta"))
    except Exception:  # noqa: BLE001 - a shape the model rejects; the real forward names it
        return 0
    finally:
        for h in hooks:
            h.remove()
    return max(sizes)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int = 10, weights: str | None = None,
                batch_sizes: tuple[int, ...] = ()):
    """A zoo model sized for ``input_shape`` (batch, C, H, W), optionally with weights loaded. It is first built
    on the meta device: a shape (or batch) whose weights and activations would not fit in memory is refused
    before anything is allocated."""
    import torch

    from .core.io import load_weights_into
    from .core.limits import check_memory
    from .models import create_model

    kwargs = {"num_classes": num_classes}
    if len(input_shape) == 4:
        kwargs.update(in_channels=input_shape[1], input_size=input_shape[2])
    with torch.device("meta"):
        meta = create_model(name, **kwargs)
    weights_bytes = sum(t.numel() * t.element_size() for t in list(meta.parameters()) + list(meta.buffers()))
    check_memory(weights_bytes, f"model {name} for --input-shape {','.join(map(str, input_shape))}",
                 "pass a smaller --input-shape")
    for batch in (input_shape[0], *batch_sizes):
        shape = (batch, *input_shape[1:])
        per_sample = math.prod(shape) * 4
        check_memory(weights_bytes + 2 * per_sample + 3 * _activation_bytes(meta, shape),
                     f"running {name} on an input of shape {','.join(map(str, shape))}",
                     "pass a smaller --input-shape or batch")
    model = create_model(name, **kwargs)
    if weights:
        load_weights_into(model, weights)
    return model


def cmd_analyze(args) -> int:
    import torch

    from .measure import analyze

    shape = parse_shape(args.input_shape)
    model = build_model(args.model, shape, args.num_classes, args.weights)
    result = analyze(model, torch.zeros(shape))
    print(result.to_json(indent=2) if args.json else result.to_table())
    return 0


def _data(args):
    from .data import default_dataset, load_dataset

    if args.data == "auto":
        return default_dataset(args.data_dir, seed=args.seed)
    kw = {"seed": args.seed}
    if args.data_dir:
        kw["data_dir"] = args.data_dir
    return load_dataset(args.data, **kw)


def cmd_train(args) -> int:
    from .core.io import ensure_writable, save_weights
    from .train import TrainConfig, Trainer, evaluate

    out = ensure_writable(args.out, args.force)
    _check_train_checkpoint(args)
    splits = _data(args)
    model = build_model(args.model, (1, *splits.input_shape), splits.num_classes)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      scheduler=None if args.scheduler == "none" else args.scheduler, seed=args.seed,
                      weight_decay=args.weight_decay)
    Trainer(model, splits.train, cfg, val_data=splits.val, checkpoint_dir=args.checkpoint_dir,
            resume=args.resume).fit()
    test = evaluate(model, splits.test)
    save_weights(model, out, force=args.force)
    print(f"{args.model} on {splits.label}: test accuracy {test['accuracy']:.4f}; weights -> {out}")
    return 0


def _check_train_checkpoint(args) -> None:
    """The --checkpoint-dir's last checkpoint, before any data loads: refused with the CLI's own options as fixes."""
    from .core.errors import OutputExistsError
    from .core.io import safe_torch_load

    if args.resume and not args.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir (the folder the interrupted run wrote)")
    if not args.checkpoint_dir:
        return
    last = Path(args.checkpoint_dir) / "last.pt"
    if not last.exists():
        return
    if not args.resume:
        raise OutputExistsError(f"{last} holds a previous run's checkpoint; pass --resume to continue it, or "
                                "choose another --checkpoint-dir (or delete the file to start over)")
    safe_torch_load(last, "checkpoint", "delete it to start the training over, or drop --resume")


def _print_run(metrics: dict, out: Path) -> None:
    from .recipe.final import before_after_table

    source = metrics.get("data_source")
    print(f"data: {metrics['data']}{f' ({source})' if source else ''} (test n={metrics['n_test']})")
    print(before_after_table(metrics))
    r = metrics["ratios"]
    speed = ", ".join(f"{b}: {v:.2f}x" for b, v in r["speedup_vs_torch_eager_x"].items())
    print(f"\naccuracy cost: {r['accuracy_drop_points']:.2f} points | {r['size_x']:.2f}x smaller on disk | "
          f"faster than torch fp32 eager: {speed} ({metrics['latency_note']})")
    if "speedup_same_runtime_onnx_x" in r:
        same = ", ".join(f"{b}: {v:.2f}x" for b, v in r["speedup_same_runtime_onnx_x"].items())
        print(f"faster than the dense model in onnxruntime: {same}")
    for key, b in (metrics.get("budget") or {}).items():
        print(f"budget {key}: {b['actual']} vs limit {b['limit']} -> {'met' if b['met'] else 'MISSED'}")
    print(f"report: {out / 'report.html'} (and report.md, metrics.json)")


def cmd_compress(args) -> int:
    from .recipe import run_recipe
    from .train import rank

    metrics = run_recipe(args.recipe, args.out, resume=args.resume, force=args.force, trusted=tuple(args.trust),
                         progress=not args.no_progress, weights=args.weights, data_dir=args.data_dir)
    if metrics is not None and rank() == 0:
        _print_run(metrics, Path(args.out))
    return 0


def cmd_demo(args) -> int:
    from importlib.resources import files

    import yaml

    from .recipe import parse_recipe, run_recipe

    source = "netcompress/recipe/demo.yaml"
    raw = yaml.safe_load(files("netcompress.recipe").joinpath("demo.yaml").read_text(encoding="utf-8"))
    if args.data != "auto" or args.data_dir:
        raw["data"] = {**raw.get("data", {}), "name": args.data,
                       **({"data_dir": str(Path(args.data_dir).expanduser().resolve())} if args.data_dir else {})}
    recipe = parse_recipe(raw, source)
    out = Path(args.out) if args.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    print(f"netcompress demo: recipe {source} -> {out}", flush=True)
    metrics = run_recipe(recipe, out, force=args.force, recipe_text=yaml.safe_dump(raw, sort_keys=False),
                         progress=not args.no_progress)
    _print_run(metrics, out)
    return 0


def _parse_ints(text: str, what: str, hi: int = 1 << 16) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text[:60]!r} must be comma-separated integers, e.g. 1,32") from None
    if not values or any(not 1 <= v <= hi for v in values):
        raise ConfigError(f"{what} {text[:60]!r} must list integers in 1..{hi}, e.g. 1,32")
    return values


def _parse_levels(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--levels {text[:60]!r} must be comma-separated sparsities, e.g. 0.5,0.9") from None
    if not values or any(not (math.isfinite(v) and 0 <= v < 1) for v in values):
        raise ConfigError(f"--levels {text[:60]!r}: each sparsity must be in [0, 1), e.g. 0.5,0.9")
    return values


def _candidate(spec: str, shape: tuple[int, ...], num_classes: int, batches: tuple[int, ...]):
    """``file.onnx`` -> onnxruntime callable; ``zoo_name`` or ``zoo_name@weights`` -> torch model."""
    from .export import ort_session
    from .measure import ort_callable

    if spec.endswith(".onnx"):
        if not Path(spec).is_file():
            raise ConfigError(f"{spec} does not exist; pass an .onnx file or a zoo model name")
        return ort_callable(ort_session(spec))
    name, _, weights = spec.partition("@")
    return build_model(name, shape, num_classes, weights or None, batch_sizes=batches)


def cmd_bench(args) -> int:
    import torch

    from .measure import compare_latency

    shape = parse_shape(args.input_shape)
    batches = _parse_ints(args.batch, "--batch")
    labels = [c.partition("=")[0] if "=" in c else c for c in args.candidates]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"candidate labels repeat: {labels}; name them label=spec")
    cands = {lab: _candidate(c.partition("=")[2] if "=" in c else c, shape, args.num_classes, tuple(batches))
             for lab, c in zip(labels, args.candidates)}
    print(f"latency, medians of {args.repeats} interleaved repeats, {args.threads} thread(s); "
          f"speed-up vs {labels[0]}")
    for b in batches:
        x = torch.randn(b, *shape[1:], generator=torch.Generator().manual_seed(0))
        stats = compare_latency(cands, x, repeats=args.repeats, threads=args.threads)
        base = stats[labels[0]].median_ms
        for lab in labels:
            st = stats[lab]
            print(f"batch {b:<4} {lab:<24} {st.median_ms:9.3f} ms  (p10 {st.p10_ms:.3f}, p90 {st.p90_ms:.3f})  "
                  f"{base / st.median_ms:6.2f}x")
    return 0


def cmd_export(args) -> int:
    import torch

    from .export import check_onnx, to_onnx
    from .export.onnx import file_opset

    shape = parse_shape(args.input_shape)
    model = build_model(args.model, shape, args.num_classes, args.weights)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    path = to_onnx(model.eval(), x, args.out, force=args.force, opset=args.opset)
    diff = check_onnx(model, path, x)
    print(f"{path}: opset {file_opset(path)}, {Path(path).stat().st_size:,} bytes; onnxruntime vs torch max abs "
          f"diff {diff:.3g}")
    return 0


def cmd_sensitivity(args) -> int:
    from .core.io import ensure_writable
    from .prune.sensitivity import curves, plot, sensitivity_analysis, write_csv

    levels = _parse_levels(args.levels)
    out = Path(args.out)
    csv_path, png_path = (ensure_writable(out.with_suffix(s), args.force) for s in (".csv", ".png"))
    splits = _data(args)
    model = build_model(args.model, (1, *splits.input_shape), splits.num_classes, args.weights)
    data = splits.val if args.split == "val" else splits.test
    rows = sensitivity_analysis(model, data, [lv for lv in levels if lv > 0])
    paths = [write_csv(rows, csv_path, force=True), plot(rows, png_path, force=True)]
    for name, pts in curves(rows, levels).items():
        print(f"{name:<32} " + "  ".join(f"{lvl:.2f}:{acc:.4f}" for lvl, acc in pts))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


NUM_CLASSES = dict(type=int_in(1, 100_000), default=10, help="classes of the model's output layer")
INPUT_SHAPE = "one input's shape, batch first: N,C,H,W (checked against the memory available)"


def _add_data_args(p):
    p.add_argument("--data", default="auto", help="data set: fashion_mnist, mnist_idx (needs --data-dir), digits, "
                   "or auto (the --data-dir folder, else Fashion-MNIST if installed, else digits)")
    p.add_argument("--data-dir", default=None, help="folder of MNIST-format idx files (default: none; env "
                   "NETCOMPRESS_DATA_DIR)")
    p.add_argument("--seed", type=int_in(0, 2**31), default=0, help="seed of the data split and the training")


def _version() -> str:
    from . import __version__

    return f"netcompress {__version__}"


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netcompress", description=DESCRIPTION, formatter_class=_Help,
                     epilog="Run 'netcompress COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to the console")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Help)
        p.set_defaults(func=func)
        return p

    p = command("analyze", "per-layer params, nonzeros, MACs and bytes of a zoo model", cmd_analyze)
    p.add_argument("--model", required=True, help="zoo model name, e.g. lenet5, resnet20")
    p.add_argument("--weights", default=None, help=".safetensors or torch state_dict file (default: untrained)")
    p.add_argument("--input-shape", default="1,1,28,28", help=INPUT_SHAPE)
    p.add_argument("--num-classes", **NUM_CLASSES)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = command("train", "train a zoo model on a data set and save its weights", cmd_train)
    p.add_argument("--model", required=True, help="zoo model name, e.g. lenet5, resnet20")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors recommended)")
    p.add_argument("--epochs", type=int_in(0, 10_000), default=5, help="training epochs")
    p.add_argument("--batch-size", type=int_in(1, 1 << 16), default=128, help="training batch size")
    p.add_argument("--lr", type=float_in(0, 100, lo_open=True), default=0.05, help="peak learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd", help="optimizer of the training")
    p.add_argument("--scheduler", choices=["cosine", "step", "onecycle", "none"], default="cosine",
                   help="learning-rate schedule")
    p.add_argument("--weight-decay", type=float_in(0, 1), default=5e-4, help="L2 weight decay")
    p.add_argument("--checkpoint-dir", default=None, help="folder for a checkpoint after every epoch "
                   "(default: none, a killed run starts over)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir's last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _add_data_args(p)

    p = command("compress", "run a YAML recipe (model, data, stages, budget) into a run directory", cmd_compress)
    p.add_argument("recipe", help="recipe file (examples in recipes/)")
    p.add_argument("--out", required=True, help="run directory; refused if it exists, unless --resume or --force")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--force", action="store_true", help="replace --out, only if it is a run directory netcompress "
                   "created")
    p.add_argument("--trust", action="append", default=[], metavar="PKG",
                   help="allow model.factory to import from package PKG (importing runs its code; the factory must "
                   "still be an nn.Module class or a @model_builder function); repeatable (default: netcompress only)")
    p.add_argument("--weights", metavar="FILE", help="start from this trained weights file instead of the recipe's "
                   "model.weights / model.pretrain (default: the recipe's)")
    p.add_argument("--data-dir", metavar="DIR", help="read the recipe's data from this folder of MNIST-format idx "
                   "files (default: the recipe's data.data_dir)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress output")

    p = command("sensitivity", "per-layer accuracy when each layer alone is magnitude-pruned", cmd_sensitivity)
    p.add_argument("--model", required=True, help="zoo model name, e.g. lenet5")
    p.add_argument("--weights", required=True, help="trained weights file (.safetensors or state_dict)")
    p.add_argument("--levels", default="0.3,0.5,0.7,0.8,0.9,0.95", help="sparsities to try, each in [0, 1)")
    p.add_argument("--split", choices=["val", "test"], default="val", help="data split to measure on")
    p.add_argument("--out", required=True, help="output stem: writes STEM.csv and STEM.png")
    p.add_argument("--force", action="store_true", help="overwrite STEM.csv and STEM.png if they exist")
    _add_data_args(p)

    p = command("bench", "A/B latency: interleaved medians of .onnx files and/or zoo models", cmd_bench)
    p.add_argument("candidates", nargs="+", help="[label=]model.onnx | [label=]zoo_name[@weights]; first is the "
                   "baseline")
    p.add_argument("--input-shape", default="1,1,28,28", help="one sample's shape with batch 1")
    p.add_argument("--num-classes", **NUM_CLASSES)
    p.add_argument("--batch", default="1,32", help="batch sizes to time, comma-separated")
    p.add_argument("--repeats", type=int_in(1, 100_000), default=30, help="interleaved timing repeats")
    p.add_argument("--threads", type=int_in(1, 1024), default=1, help="intra-op threads")

    from .export.onnx import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    p = command("export", "export a zoo model to ONNX and check it against torch with onnxruntime", cmd_export)
    p.add_argument("--model", required=True, help="zoo model name, e.g. lenet5")
    p.add_argument("--weights", default=None, help=".safetensors or torch state_dict file (default: untrained)")
    p.add_argument("--input-shape", default="1,1,28,28", help=INPUT_SHAPE)
    p.add_argument("--num-classes", **NUM_CLASSES)
    p.add_argument("--opset", type=int_in(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET}")
    p.add_argument("--out", required=True, help=".onnx file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    p = command("demo", "the end-to-end demo: built-in recipe, before/after table, report", cmd_demo)
    p.add_argument("--out", default=None, help="run directory (default: runs/demo-<time>)")
    p.add_argument("--force", action="store_true", help="replace --out, only if it is a run directory netcompress "
                   "created")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress output")
    _add_data_args(p)
    return parser


def _error_line(exc: BaseException) -> str:
    """The message to print: a full disk named as such even when a caller wrapped it (the cause chain)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, DiskFullError):
            return str(seen)
        seen = seen.__cause__
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see '{exc.prog} --help')", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # a run's log.txt wants INFO from 'netcompress'; the console does not
    if not args.verbose:  # torch's exporter warns that torchvision (never installed here) is missing
        logging.getLogger("torch.onnx._internal.exporter._registration").addFilter(
            lambda record: "torchvision" not in record.getMessage())
    try:
        return args.func(args)
    except NetcompressError as exc:
        print(f"netcompress {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"netcompress {args.command}: error: out of memory; use smaller inputs, batches or models",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
