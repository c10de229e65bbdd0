"""Run reports: one self-contained HTML file (plots embedded as PNG) plus Markdown, from metrics.json.

Plots: per-layer sparsity, per-layer bit widths, sensitivity curves (when a stage recorded them),
accuracy vs bytes on disk and accuracy vs latency for every stage. Figures are drawn on
``matplotlib.figure.Figure`` objects (no pyplot global state).

Stages contribute to the report through ``ctx.record(key, value)``; known keys:
``bit_widths`` ({layer: bits}) and ``sensitivity`` ({layer: [[level, accuracy], ...]}).
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Optional

from ..core.io import atomic_write

BLOCK_ROWS = (("accuracy", "accuracy"), ("params", "params"), ("nonzero_params", "nonzero params"),
              ("macs", "MACs"), ("bytes_on_disk", "bytes on disk"), ("latency_ms", "latency ms (batch 1)"))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 3.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _layer_bars(layers: dict, key: str, title: str, ylabel: str, value) -> Optional[str]:
    base = [layer for layer in layers.get("final", []) if layer["params"] > 0]
    if not base:
        return None
    fig = _figure(max(7.0, 0.35 * len(base)), 3.4)
    ax = fig.add_subplot()
    ax.bar(range(len(base)), [value(layer) for layer in base], color="#4c72b0")
    ax.set_xticks(range(len(base)))
    ax.set_xticklabels([layer["name"] for layer in base], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


def _bit_widths(metrics: dict) -> Optional[str]:
    widths: dict[str, float] = {}
    for record in metrics.get("records", {}).values():
        widths.update(record.get("bit_widths", {}))
    if not widths:
        return None
    fig = _figure(max(7.0, 0.35 * len(widths)), 3.4)
    ax = fig.add_subplot()
    ax.bar(range(len(widths)), list(widths.values()), color="#dd8452")
    ax.set_xticks(range(len(widths)))
    ax.set_xticklabels(list(widths), rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("weight bits")
    ax.set_title("per-layer bit width (final)")
    return _png(fig)


def _sensitivity(metrics: dict) -> Optional[str]:
    curves: dict[str, list] = {}
    for record in metrics.get("records", {}).values():
        curves.update(record.get("sensitivity", {}))
    if not curves:
        return None
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
    ax.set_xlabel("level (e.g. sparsity)")
    ax.set_ylabel("accuracy")
    ax.set_title("sensitivity per layer")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def _tradeoff(points: list[dict], xkey: str, xlabel: str) -> Optional[str]:
    pts = [p for p in points if p.get(xkey) is not None and p.get("accuracy") is not None]
    if not pts:
        return None
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    xs, ys = [p[xkey] for p in pts], [p["accuracy"] for p in pts]
    ax.plot(xs, ys, "-o", color="#55a868")
    for p, x, y in zip(pts, xs, ys):
        ax.annotate(p["stage"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if xkey == "bytes_on_disk":
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:,.0f} kB"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"accuracy vs {xlabel} per stage")
    return _png(fig)


def _rows_before_after(metrics: dict) -> list[list[str]]:
    b, f = metrics["baseline"], metrics["final"]
    rows = [["", f"baseline ({b.get('format')}, {b.get('runtime')})", f"final ({f.get('format')}, {f.get('runtime')})"]]
    rows += [[label, _fmt(b.get(key)), _fmt(f.get(key))] for key, label in BLOCK_ROWS]
    return rows


def _ratio_rows(metrics: dict) -> list[list[str]]:
    r = metrics["ratios"]
    rows = [["ratio", "value"], ["smaller on disk (x)", f"{r['size_x']:.2f}"],
            ["accuracy drop (points)", f"{r['accuracy_drop_points']:.2f}"]]
    for b, v in r["speedup_vs_torch_eager_x"].items():
        rows.append([f"faster than torch fp32 eager, {b} (x)", f"{v:.2f}"])
    for b, v in r.get("speedup_same_runtime_onnx_x", {}).items():
        rows.append([f"faster than onnxruntime fp32, same runtime, {b} (x)", f"{v:.2f}"])
    return rows


def _latency_rows(metrics: dict) -> list[list[str]]:
    lat = metrics["latency_ms"]
    names = sorted({k for v in lat.values() for k in v})
    return [["batch", *[f"{n} ms" for n in names]]] + [[b, *[_fmt(v.get(n)) for n in names]] for b, v in lat.items()]


def _stage_rows(metrics: dict) -> list[list[str]]:
    keys = ("stage", "accuracy", "params", "nonzero_params", "macs", "bytes_on_disk", "bytes_kind", "latency_ms_torch")
    return [list(keys)] + [[_fmt(p.get(k)) for k in keys] for p in metrics.get("stages", [])]


def _budget_rows(metrics: dict) -> Optional[list[list[str]]]:
    budget = metrics.get("budget")
    if not budget:
        return None
    return [["budget", "limit", "actual", "met"]] + [[k, _fmt(v["limit"]), _fmt(v["actual"]), _fmt(v["met"])]
                                                     for k, v in budget.items()]


def _md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def render(metrics: dict) -> tuple[str, str, dict[str, str]]:
    """(html, markdown, {plot name: base64 PNG}) for a run's metrics."""
    layers = metrics.get("layers", {})
    plots = {
        "per-layer sparsity": _layer_bars(layers, "nonzero_params", "per-layer sparsity (final)", "fraction zero",
                                          lambda l: 1 - l["nonzero_params"] / l["params"]),
        "per-layer bit width": _bit_widths(metrics),
        "sensitivity": _sensitivity(metrics),
        "accuracy vs size": _tradeoff(metrics.get("stages", []), "bytes_on_disk", "bytes on disk"),
        "accuracy vs latency": _tradeoff(metrics.get("stages", []), "latency_ms_torch", "torch latency ms"),
    }
    plots = {k: v for k, v in plots.items() if v}
    sections = [("Before / after", _rows_before_after(metrics)), ("Ratios", _ratio_rows(metrics)),
                ("Latency (" + metrics.get("latency_note", "") + ")", _latency_rows(metrics)),
                ("Stages", _stage_rows(metrics))]
    budget = _budget_rows(metrics)
    if budget:
        sections.append(("Budget", budget))
    name = metrics.get("recipe", {}).get("name", "run")
    md = [f"# netcompress report: {name}", "", f"data: {metrics.get('data')} (test n={metrics.get('n_test')})", ""]
    for title, rows in sections:
        md += [f"## {title}", "", _md_table(rows), ""]
    md += ["Plots are embedded in report.html: " + ", ".join(plots) + ".", ""]
    parts = [f"<h1>netcompress report: {html.escape(name)}</h1>",
             f"<p>data: {html.escape(str(metrics.get('data')))} (test n={metrics.get('n_test')})</p>"]
    for title, rows in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(rows)]
    for title, png in plots.items():
        parts += [f"<h2>{html.escape(title)}</h2>", f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">']
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>netcompress report: {html.escape(name)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return page, "\n".join(md), plots


def write_report(metrics: dict, out_dir: str | Path) -> Path:
    """Write report.html (self-contained) and report.md into ``out_dir``; returns the HTML path."""
    out_dir = Path(out_dir)
    page, md, _ = render(metrics)
    atomic_write(out_dir / "report.md", lambda p: p.write_text(md, encoding="utf-8"))
    return atomic_write(out_dir / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
