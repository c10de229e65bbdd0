"""Recipe errors: every problem names the file, the key path and what is allowed."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..core.errors import ConfigError
from ..core.registry import did_you_mean

MAX_SHOWN = 8  # a fuzzed recipe can have hundreds of problems; show the first few


def key_path(loc: Sequence[Any]) -> str:
    """``("stages", 1, "epochs")`` -> ``stages[1].epochs``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecipeError(ConfigError):
    """A recipe is malformed: one line per problem, each ``file: key.path: message``."""

    def __init__(self, source: str, problems: Iterable[tuple[Sequence[Any], str]]):
        self.source = source
        # loc None: the message starts with its own key path (config errors, e.g. "stages[1].config.ratio must be")
        self.problems = [(None if loc is None else tuple(loc), msg) for loc, msg in problems]
        lines = [f"{source}: {msg}" if loc is None else f"{source}: {key_path(loc)}: {msg}"
                 for loc, msg in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"... and {len(self.problems) - MAX_SHOWN} more problems")
        super().__init__("\n".join(lines) if lines else f"{source}: invalid recipe")

    @property
    def paths(self) -> list[str]:
        return [key_path(loc) if loc is not None else msg.split(":")[0].split(" ")[0] for loc, msg in self.problems]


def unknown_key(key: Any, allowed: Sequence[str]) -> str:
    hint = did_you_mean(str(key), list(allowed)) if isinstance(key, str) else ""
    return f"unknown key {short_repr(key)}.{hint} Allowed keys: {', '.join(allowed)}"


def unknown_name(kind: str, name: Any, allowed: Sequence[str]) -> str:
    hint = did_you_mean(name, list(allowed)) if isinstance(name, str) else ""
    return f"unknown {kind} {short_repr(name)}.{hint} Allowed: {', '.join(allowed) or '(none registered)'}"
