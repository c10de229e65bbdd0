"""Command line: thin; parses, calls the API, prints. Errors a user can cause print one line."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .core.errors import ConfigError, NetcompressError

log = logging.getLogger("netcompress")


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {text!r} is not a comma-separated list of integers, "
                          "e.g. 1,1,28,28") from None
    if len(shape) < 2 or any(v < 1 for v in shape):
        raise ConfigError(f"--input-shape {text!r} must have >= 2 positive sizes (batch first), e.g. 1,1,28,28")
    return shape


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int = 10, weights: str | None = None):
    """A zoo model sized for ``input_shape`` (batch, C, H, W), optionally with weights loaded."""
    from .core.io import load_weights_into
    from .models import create_model

    kwargs = {"num_classes": num_classes}
    if len(input_shape) == 4:
        kwargs.update(in_channels=input_shape[1], input_size=input_shape[2])
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
    splits = _data(args)
    model = build_model(args.model, (1, *splits.input_shape), splits.num_classes)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      scheduler=args.scheduler, seed=args.seed, weight_decay=args.weight_decay)
    Trainer(model, splits.train, cfg, val_data=splits.val, checkpoint_dir=args.checkpoint_dir,
            resume=args.resume).fit()
    test = evaluate(model, splits.test)
    save_weights(model, out, force=args.force)
    print(f"{args.model} on {splits.name}: test accuracy {test['accuracy']:.4f}; weights -> {out}")
    return 0


def _print_run(metrics: dict, out: Path) -> None:
    from .recipe.final import before_after_table

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
                         progress=not args.no_progress, weights=args.weights)
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
                       **({"data_dir": args.data_dir} if args.data_dir else {})}
    recipe = parse_recipe(raw, source)
    out = Path(args.out) if args.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    print(f"netcompress demo: recipe {source} -> {out}", flush=True)
    metrics = run_recipe(recipe, out, force=args.force, recipe_text=yaml.safe_dump(raw, sort_keys=False),
                         progress=not args.no_progress)
    print(f"data: {metrics['data']} (test n={metrics['n_test']})")
    _print_run(metrics, out)
    return 0


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r} must be comma-separated integers, e.g. 1,32") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} {text!r} must list positive integers, e.g. 1,32")
    return values


def _candidate(spec: str, shape: tuple[int, ...], num_classes: int):
    """``file.onnx`` -> onnxruntime callable; ``zoo_name`` or ``zoo_name@weights`` -> torch model."""
    from .export import ort_session
    from .measure import ort_callable

    if spec.endswith(".onnx"):
        if not Path(spec).is_file():
            raise ConfigError(f"{spec} does not exist; pass an .onnx file or a zoo model name")
        return ort_callable(ort_session(spec))
    name, _, weights = spec.partition("@")
    return build_model(name, shape, num_classes, weights or None)


def cmd_bench(args) -> int:
    import torch

    from .measure import compare_latency

    shape = parse_shape(args.input_shape)
    labels = [c.partition("=")[0] if "=" in c else c for c in args.candidates]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"candidate labels repeat: {labels}; name them label=spec")
    cands = {lab: _candidate(c.partition("=")[2] if "=" in c else c, shape, args.num_classes)
             for lab, c in zip(labels, args.candidates)}
    print(f"latency, medians of {args.repeats} interleaved repeats, {args.threads} thread(s); "
          f"speed-up vs {labels[0]}")
    for b in _parse_ints(args.batch, "--batch"):
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

    shape = parse_shape(args.input_shape)
    model = build_model(args.model, shape, args.num_classes, args.weights)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    opset = {} if args.opset is None else {"opset": args.opset}
    path = to_onnx(model.eval(), x, args.out, force=args.force, **opset)
    diff = check_onnx(model, path, x)
    print(f"{path}: {Path(path).stat().st_size:,} bytes; onnxruntime vs torch max abs diff {diff:.3g}")
    return 0


def cmd_sensitivity(args) -> int:
    from .core.io import ensure_writable
    from .prune.sensitivity import curves, plot, sensitivity_analysis, write_csv

    splits = _data(args)
    model = build_model(args.model, (1, *splits.input_shape), splits.num_classes, args.weights)
    levels = [float(v) for v in args.levels.split(",")]
    data = splits.val if args.split == "val" else splits.test
    out = Path(args.out)
    csv_path, png_path = (ensure_writable(out.with_suffix(s), args.force) for s in (".csv", ".png"))
    rows = sensitivity_analysis(model, data, [lv for lv in levels if lv > 0])
    paths = [write_csv(rows, csv_path, force=True), plot(rows, png_path, force=True)]
    for name, pts in curves(rows, levels).items():
        print(f"{name:<32} " + "  ".join(f"{lvl:.2f}:{acc:.4f}" for lvl, acc in pts))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


def _add_data_args(p):
    p.add_argument("--data", default="auto", help="fashion_mnist, mnist_idx, digits, or auto (default)")
    p.add_argument("--data-dir", default=None, help="folder of MNIST-format idx files")
    p.add_argument("--seed", type=int, default=0)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netcompress", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="per-layer params, nonzeros, MACs, bytes")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default=None, help=".safetensors or torch state_dict file")
    p.add_argument("--input-shape", default="1,1,28,28")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("train", help="train a zoo model on a data set and save its weights")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="weights file (.safetensors recommended)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--scheduler", default="cosine")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _add_data_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="run a YAML recipe into a run directory")
    p.add_argument("recipe", help="recipe file (see recipes/)")
    p.add_argument("--out", required=True, help="run directory (refused if it exists, unless --resume/--force)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--trust", action="append", default=[], metavar="PKG",
                   help="allow model.factory to import from package PKG (importing runs its code)")
    p.add_argument("--weights", metavar="FILE", help="start from this trained weights file (.safetensors) instead "
                   "of the recipe's model.weights / model.pretrain")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("sensitivity", help="per-layer accuracy when each layer alone is magnitude-pruned")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--levels", default="0.3,0.5,0.7,0.8,0.9,0.95")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--out", required=True, help="output stem: writes STEM.csv and STEM.png")
    p.add_argument("--force", action="store_true")
    _add_data_args(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("bench", help="A/B latency: interleaved medians of .onnx files and/or zoo models")
    p.add_argument("candidates", nargs="+", help="[label=]model.onnx | [label=]zoo_name[@weights]; first is the baseline")
    p.add_argument("--input-shape", default="1,1,28,28", help="one sample's shape with batch 1")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", default="1,32")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export a model to ONNX and check it against torch with onnxruntime")
    p.add_argument("--model", required=True)
    p.add_argument("--weights", default=None)
    p.add_argument("--input-shape", default="1,1,28,28")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, 20)")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="the end-to-end demo: built-in recipe, before/after table, report")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    _add_data_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
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
        print(f"netcompress {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
