"""Harness of the attack and fault suite.

Every case runs the CLI in-process (``netcompress.cli.main(argv)``) inside a sandbox folder that holds a
user's files (a thesis folder with a decoy ``run.json``, a precious file). Each case asserts what the issue
asks of every bad input: the exit code, one line on stderr naming the problem, no traceback, no file
written or deleted outside ``--out`` (every file under the test's temporary folder is fingerprinted
before and after), and no command run (the marker file ``PWNED``, which every hostile input tries to
create, never appears)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from netcompress.cli import main

# a tiny recipe that trains in well under a second: the positive controls and the runs attacks start from
TINY = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}, "pretrain": {"epochs": 1, "lr": 0.1}},
        "data": {"name": "digits", "image_size": 8, "train_subset": 256, "eval_subset": 128},
        "stages": [{"type": "fine-tune", "epochs": 1, "lr": 0.05}, {"type": "export", "formats": ["safetensors"]}],
        "measure": {"latency_repeats": 3, "latency_warmup": 0}}


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def fingerprint(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """{relative path: kind and content hash} of everything under ``root`` (links not followed)."""
    skip = tuple(s.absolute() for s in skip)
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if any(path.absolute() == s or s in path.absolute().parents for s in skip):
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            elif path.is_file():
                st = path.stat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if st.st_size < 1 << 24 else st.st_mtime_ns
                found[rel] = ("file", st.st_size, digest)
            else:
                found[rel] = ("special",)
    return found


class Sandbox:
    def __init__(self, tmp_path: Path, capsys):
        self.tmp = tmp_path
        self.root = tmp_path / "sandbox"
        self.marker = tmp_path / "PWNED"
        self._capsys = capsys
        (self.root / "thesis").mkdir(parents=True)
        (self.root / "thesis" / "chapter1.tex").write_text("four years of work\n")
        (self.root / "thesis" / "run.json").write_text('{"format": "netcompress.run/1", "completed": []}')
        (self.root / "precious.txt").write_text("keep me\n")

    def recipe(self, data, name: str = "r.yaml") -> Path:
        path = self.root / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    def run(self, argv: list, out: Path | None = None) -> Outcome:
        """``main(argv)``; asserts nothing outside ``out`` changed and no marker appeared."""
        skip = (out,) if out is not None else ()
        before = fingerprint(self.tmp, skip)
        self._capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self._capsys.readouterr()
        after = fingerprint(self.tmp, skip)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"files changed outside --out: {changed}"
        assert not self.marker.exists(), "a hostile input ran a command"
        return Outcome(code, captured.out, captured.err)


@pytest.fixture
def sandbox(tmp_path, capsys, monkeypatch):
    box = Sandbox(tmp_path, capsys)
    monkeypatch.chdir(box.root)
    return box


def refused(outcome: Outcome, *words: str, code: int = 2) -> str:
    """One line on stderr, from netcompress, naming ``words``; no traceback anywhere."""
    assert outcome.code == code, (outcome.code, outcome.err)
    assert "Traceback" not in outcome.err + outcome.out
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("netcompress"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A real run directory of TINY (marker, lock file, run.json, checkpoints), made once; tests copy it."""
    from netcompress.recipe import run_recipe

    tmp = tmp_path_factory.mktemp("finished")
    recipe = tmp / "r.yaml"
    recipe.write_text(yaml.safe_dump(TINY, sort_keys=False))
    run_recipe(recipe, tmp / "run", progress=False)
    return recipe, tmp / "run"


def copy_run(finished_run, sandbox, name: str = "run") -> tuple[Path, Path]:
    """The finished run and its recipe copied into the sandbox: (recipe, run directory)."""
    import shutil

    recipe, run = finished_run
    shutil.copytree(run, sandbox.root / name, symlinks=True)
    shutil.copy(recipe, sandbox.root / "r.yaml")
    return sandbox.root / "r.yaml", sandbox.root / name
