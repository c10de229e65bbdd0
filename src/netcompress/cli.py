"""Command line: thin; parses, calls the API, prints. Errors a user can cause print one line."""
from __future__ import annotations

import argparse
import json
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


def cmd_demo(args) -> int:
    import torch

    from .core.io import save_weights
    from .measure import analyze, file_bytes, measure_latency
    from .models import lenet_300_100
    from .train import TrainConfig, Trainer, evaluate

    out_dir = Path(args.out) / time.strftime("demo-%Y%m%d-%H%M%S")
    splits = _data(args)
    print(f"data: {splits.name} ({len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test)")
    model = lenet_300_100(splits.input_shape[0], splits.num_classes, splits.input_shape[1])
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, optimizer="sgd", scheduler="cosine",
                      seed=args.seed, weight_decay=5e-4)
    Trainer(model, splits.train, cfg, val_data=splits.val).fit()
    acc = evaluate(model, splits.test)["accuracy"]
    x = torch.zeros(1, *splits.input_shape)
    print(analyze(model, x).to_table())
    path = save_weights(model, out_dir / "lenet_300_100.safetensors")
    lat = measure_latency(model, x, repeats=50)
    print(f"\ntest accuracy {acc:.4f} | {file_bytes(path):,} bytes on disk | "
          f"latency batch 1: {lat.median_ms:.3f} ms (median of {lat.repeats}, 1 thread)\nweights: {path}")
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

    p = sub.add_parser("demo", help="the end-to-end demo")
    p.add_argument("--out", default="runs")
    p.add_argument("--epochs", type=int, default=3)
    _add_data_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
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
