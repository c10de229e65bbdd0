"""Real English text with human labels, offline: the test data that ships inside gensim's wheel.

``make install`` installs gensim with ``--no-deps``: only its data files are read here (gensim itself
is never imported, so its own requirements are not needed).

- Lee-50 (Lee, Pincombe & Welsh 2005): 50 news documents (latin-1) and the mean human similarity rating of
  every pair (``similarities0-1.txt``, upper triangle, 0..1).
- ``pang_lee_polarity.cor``: 200 movie-review sentences (Pang & Lee), 100 ``__label__neg`` and 100
  ``__label__pos``, latin-1.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import DataError, DependencyError

_HINT = "run 'make install', or 'pip install --no-deps gensim==4.4.0' (only its data files are used)"


def gensim_test_data() -> Path:
    """gensim's ``test/test_data`` folder, found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"the Lee-50 and Pang-Lee text sets ship in the package 'gensim', which is not "
                              f"installed: {_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
    if not folder.is_dir():
        raise DataError(f"{folder} is missing: this gensim install has no test data; reinstall with {_HINT}")
    return folder


def _read(name: str, encoding: str = "utf-8") -> list[str]:
    path = gensim_test_data() / name
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall gensim: {_HINT}")
    return [line.strip() for line in path.read_text(encoding=encoding).splitlines() if line.strip()]


@dataclass(frozen=True)
class Lee50:
    documents: list[str]     # 50 news texts
    similarity: np.ndarray   # (50, 50) mean human rating, symmetric, 1 on the diagonal

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the 1,225 rated pairs (i < j)."""
        return np.triu_indices(len(self.documents), k=1)


def lee50() -> Lee50:
    docs = _read("lee.cor", encoding="latin-1")  # £ signs as byte 0xa3
    rows = [[float(v) for v in line.split()] for line in _read("similarities0-1.txt")]
    sim = np.array(rows, dtype=np.float64)
    if len(docs) != 50 or sim.shape != (50, 50):
        raise DataError(f"Lee-50 files in {gensim_test_data()} hold {len(docs)} documents and a {sim.shape} "
                        "matrix; expected 50 and (50, 50)")
    upper = np.triu(sim, 1)  # the file fills the upper triangle only
    return Lee50(docs, upper + upper.T + np.eye(50))


def pang_lee_polarity() -> tuple[list[str], np.ndarray]:
    """(sentences, labels) with label 1 = positive, 0 = negative."""
    texts, labels = [], []
    for line in _read("pang_lee_polarity.cor", encoding="latin-1"):
        tag, _, text = line.partition(" ")
        if tag not in ("__label__neg", "__label__pos"):
            raise DataError(f"pang_lee_polarity.cor: unexpected label {tag!r}")
        texts.append(text)
        labels.append(int(tag == "__label__pos"))
    return texts, np.array(labels)
