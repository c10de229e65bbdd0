"""Hostile weight files: pickles whose loading would run a command, zip bombs, wrong dtypes, NaN/Inf,
truncated files, symbolic links to devices and loops. Each is refused with one line naming the file;
code in a file is told apart from a damaged file, and torch's advice to unpickle code is never relayed."""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile

import pytest
import torch

from netcompress.core.io import save_weights
from netcompress.core.limits import available_memory
from netcompress.models import create_model
from tests.attack.harness import refused

MODEL = "lenet_300_100"


def _state():
    torch.manual_seed(0)
    return create_model(MODEL).state_dict()


def _analyze(sandbox, path):
    return sandbox.run(["analyze", "--model", MODEL, "--weights", path])


class _Call:
    """Pickles as ``fn(*args)``: what a hostile checkpoint makes ``pickle.load`` call."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _pickles(mark):
    touch = f"touch {mark}"
    import subprocess

    return {
        "torch-zip-os-system": ("torch", {"w": _Call(os.system, touch)}),
        "protocol-0": ("raw0", _Call(os.system, touch)),
        "protocol-2": ("raw2", _Call(os.system, touch)),
        "protocol-4": ("raw4", _Call(os.system, touch)),
        "protocol-5": ("raw5", _Call(os.system, touch)),
        "eval": ("torch", _Call(eval, f"open({mark!r}, 'w')")),
        "exec": ("torch", _Call(exec, f"open({mark!r}, 'w')")),
        "open-for-write": ("torch", {"w": _Call(open, mark, "w")}),
        "popen": ("torch", _Call(subprocess.Popen, ["touch", mark])),
        "inside-a-state-dict": ("torch", {**_state(), "extra": _Call(os.system, touch)}),
        "torch-hub": ("torch", _Call(torch.hub.load, "evil/repo", "model")),
        "torch-load-unsafe": ("torch", _Call(torch.load, "x.pt", None, None, False)),
        "hand-written-inst": ("bytes", f"(S'{touch}'\nios\nsystem\n.".encode()),
        "hand-written-global-reduce": ("bytes", f"cposix\nsystem\n(S'{touch}'\ntR.".encode()),
    }


CODE_CASES = ["torch-zip-os-system", "protocol-0", "protocol-2", "protocol-4", "protocol-5", "eval", "exec",
              "open-for-write", "popen", "inside-a-state-dict", "torch-hub", "torch-load-unsafe",
              "hand-written-inst", "hand-written-global-reduce"]


@pytest.mark.parametrize("case", CODE_CASES)
def test_pickled_code_is_named_never_run(sandbox, case):
    kind, obj = _pickles(str(sandbox.marker))[case]
    path = sandbox.root / "w.pt"
    if kind == "torch":
        torch.save(obj, path)
    elif kind == "bytes":
        path.write_bytes(obj)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(kind[-1])))
    line = refused(_analyze(sandbox, path), str(path), "would run code")
    assert "weights_only" not in line and "corrupt" not in line


def test_pickled_code_with_safetensors_suffix_is_not_loaded(sandbox):
    path = sandbox.root / "w.safetensors"
    path.write_bytes(pickle.dumps(_Call(os.system, f"touch {sandbox.marker}")))
    refused(_analyze(sandbox, path), str(path), "corrupt")


def _zip_bomb(path, size):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/data/0", bytes(size))
    path.write_bytes(buf.getvalue())


def _forged_size(path):
    """A stored member whose central-directory entry claims 4 GB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
    data = bytearray(buf.getvalue())
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", ["deflated-64MB", "forged-4GB"])
def test_zip_bombs_are_refused_before_reading(sandbox, case):
    path = sandbox.root / "w.pt"
    _zip_bomb(path, 64 << 20) if case == "deflated-64MB" else _forged_size(path)
    line = refused(_analyze(sandbox, path), str(path))
    assert "zip bomb" in line or "corrupt" in line


DTYPES = {"int64": torch.int64, "bool": torch.bool, "int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32,
          "complex64": torch.complex64}


@pytest.mark.parametrize("name", list(DTYPES))
def test_safetensors_of_another_dtype_kind_is_refused_not_cast(sandbox, name):
    state = {k: (v * 10).to(DTYPES[name]) for k, v in _state().items()}
    path = save_weights(state, sandbox.root / "w.safetensors")
    refused(_analyze(sandbox, path), "dtype mismatch", name)


def test_float16_weights_load(sandbox):
    """Positive control: another float width is the same kind of number and loads."""
    path = save_weights({k: v.half() for k, v in _state().items()}, sandbox.root / "w.safetensors")
    assert _analyze(sandbox, path).code == 0


NOT_TENSORS = {
    "python-ints": {k: 3 for k in _state()},
    "strings": {k: "w" for k in _state()},
    "lists": {k: [1.0, 2.0] for k in _state()},
    "none": {k: None for k in _state()},
    "int-tensors": {k: v.long() for k, v in _state().items()},
    "a-tensor": torch.ones(3),
    "a-list": [torch.ones(3)],
    "trainer-checkpoint-of-ints": {"model": {k: 1 for k in _state()}},
}


@pytest.mark.parametrize("name", list(NOT_TENSORS))
def test_pt_state_dicts_of_the_wrong_content(sandbox, name):
    path = sandbox.root / "w.pt"
    torch.save(NOT_TENSORS[name], path)
    refused(_analyze(sandbox, path), str(path))


NONFINITE = {"nan-weight": ("net.1.weight", float("nan")), "inf-bias": ("net.3.bias", float("inf")),
             "minus-inf": ("net.5.weight", float("-inf"))}


@pytest.mark.parametrize("name", list(NONFINITE))
def test_nan_inf_weights_are_named(sandbox, name):
    key, value = NONFINITE[name]
    state = _state()
    state[key].view(-1)[:3] = value
    path = save_weights(state, sandbox.root / "w.safetensors")
    out = sandbox.root / "m.onnx"
    line = refused(sandbox.run(["export", "--model", MODEL, "--weights", path, "--out", out], out=out),
                   key, "NaN/Inf", "3 of")
    assert "disagrees" not in line and not out.exists()


def _truncations():
    buf = io.BytesIO()
    torch.save(_state(), buf)
    pt = buf.getvalue()
    return {"st-empty": ("w.safetensors", 0), "st-4": ("w.safetensors", 4), "st-8": ("w.safetensors", 8),
            "st-40": ("w.safetensors", 40), "st-half": ("w.safetensors", 0.5), "st-minus-1": ("w.safetensors", -1),
            "pt-empty": ("w.pt", 0), "pt-10": ("w.pt", 10), "pt-half": ("w.pt", 0.5), "pt-minus-1": ("w.pt", -1),
            "pt-central-dir": ("w.pt", len(pt) - 30)}


@pytest.mark.parametrize("name", list(_truncations()))
def test_truncated_files(sandbox, name):
    fname, cut = _truncations()[name]
    full = save_weights(_state(), sandbox.root / f"full{os.path.splitext(fname)[1]}")
    data = full.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    path = sandbox.root / fname
    path.write_bytes(data[:n])
    line = refused(_analyze(sandbox, path), str(path))
    assert "corrupt" in line and "weights_only" not in line


def test_safetensors_header_claiming_exabytes(sandbox):
    path = sandbox.root / "w.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    refused(_analyze(sandbox, path), str(path), "corrupt")


def test_sparse_file_bigger_than_memory_is_not_read(sandbox):
    path = sandbox.root / "w.safetensors"
    with open(path, "wb") as fh:
        fh.truncate(available_memory() + (1 << 30))  # sparse: no disk used
    refused(_analyze(sandbox, path), str(path), "memory available")


def _link(sandbox, kind):
    path = sandbox.root / "w.safetensors"
    target = {"dev-zero": "/dev/zero", "directory": str(sandbox.root / "thesis"), "dangling": "nowhere.st",
              "loop": str(path)}.get(kind)
    if kind == "fifo":
        os.mkfifo(sandbox.root / "pipe")
        target = str(sandbox.root / "pipe")
    path.symlink_to(target)
    return path


LINKS = {"dev-zero": "not a regular file", "directory": "is a directory", "dangling": "does not exist",
         "loop": "does not exist", "fifo": "not a regular file"}


@pytest.mark.parametrize("kind", list(LINKS))
def test_symlinked_weights(sandbox, kind):
    refused(_analyze(sandbox, _link(sandbox, kind)), LINKS[kind])


def test_weights_that_are_a_directory(sandbox):
    refused(_analyze(sandbox, sandbox.root / "thesis"), "is a directory")
