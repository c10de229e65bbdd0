"""What a verb did: one report type for every family (``prune_``, ``quantize_``, ``decompose_``, ``add_exits``).

Per layer, what changed (with numbers before and after) and what was skipped and why; the resulting model
(the same object for in-place verbs); family details such as a structured pruning plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .select import Skip


@dataclass(frozen=True)
class Change:
    """One changed layer: ``what`` in words (``"90.0% of weights masked"``, ``"int8 weights"``, ``"rank 16"``)."""

    name: str
    layer_type: str
    what: str
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)


@dataclass
class Report:
    verb: str
    config: Any
    model: nn.Module
    changed: list[Change] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def change(self, name: str, module: nn.Module | str, what: str, before: dict | None = None,
               after: dict | None = None) -> None:
        kind = module if isinstance(module, str) else type(module).__name__
        self.changed.append(Change(name or "(model)", kind, what, dict(before or {}), dict(after or {})))

    def to_dict(self) -> dict:
        cfg = self.config.to_dict() if hasattr(self.config, "to_dict") else repr(self.config)
        return {"verb": self.verb, "config": cfg,
                "changed": [{"name": c.name, "type": c.layer_type, "what": c.what, "before": c.before,
                             "after": c.after} for c in self.changed],
                "skipped": [{"name": s.name, "type": s.layer_type, "reason": s.reason} for s in self.skipped]}

    def __str__(self) -> str:
        lines = [f"{self.verb} {type(self.config).__name__}: {len(self.changed)} layers changed, "
                 f"{len(self.skipped)} skipped"]
        width = max([len(c.name) for c in self.changed] + [len(s.name) for s in self.skipped] + [5])
        lines += [f"  {c.name:<{width}}  {c.layer_type:<12} {c.what}" for c in self.changed]
        lines += [f"  {s.name:<{width}}  {s.layer_type:<12} skipped: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Report(verb={self.verb!r}, config={type(self.config).__name__}, changed={len(self.changed)}, "
                f"skipped={len(self.skipped)})")
