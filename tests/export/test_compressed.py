import struct
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from netcompress.core.errors import CheckpointError, OutputExistsError
from netcompress.export import compression_table, effective_state_dict, load_compressed, save_compressed
from netcompress.models import create_model
from netcompress.prune import Unstructured, prune_
from netcompress.quantize import Clustered, quantize_


def _pruned_clustered(name="lenet_300_100", sparsity=0.9, bits=4):
    m = create_model(name)
    prune_(m, Unstructured(sparsity=sparsity))
    quantize_(m, Clustered(bits=bits))
    return m


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_round_trip_is_bit_exact(tmp_path, name):
    m = _pruned_clustered(name)
    path = save_compressed(m, tmp_path / "m.ncz")
    state = load_compressed(path)
    ref = effective_state_dict(m)
    assert list(state) == list(ref)
    for k in ref:
        assert state[k].dtype == ref[k].dtype and torch.equal(state[k], ref[k]), k
    plain = load_compressed(path, create_model(name))
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(plain(x), m(x))


def test_file_is_small_and_table_adds_up(tmp_path):
    m = _pruned_clustered(sparsity=0.92, bits=5)
    path = save_compressed(m, tmp_path / "m.ncz")
    dense = sum(p.numel() for p in create_model("lenet_300_100").parameters()) * 4
    assert dense / path.stat().st_size > 25  # 8% kept, ~5 + ~5 bits each
    rows = compression_table(path)
    assert sum(r["bytes"] for r in rows) < path.stat().st_size
    w = next(r for r in rows if r["tensor"] == "net.1.weight")
    assert w["encoding"] == "sparse" and abs(w["kept_pct"] - 8.0) < 0.01
    assert w["weight_bits"] <= 5.2 and w["entropy_bytes"] <= w["bytes"]


def test_dense_and_raw_encodings_round_trip(tmp_path):
    state = {"few": torch.randint(-3, 4, (40, 40)).float() * 0.1,  # dense codebook
             "many": torch.randn(50, 50),  # raw
             "ints": torch.arange(10), "flag": torch.tensor([True, False]), "half": torch.randn(3).half()}
    path = save_compressed(state, tmp_path / "s.ncz")
    back = load_compressed(path)
    for k, v in state.items():
        assert torch.equal(back[k], v), k
    enc = {r["tensor"]: r["encoding"] for r in compression_table(path)}
    assert enc["few"] == "dense" and enc["many"] == "raw"


def test_refuses_overwrite(tmp_path):
    p = save_compressed(nn.Linear(2, 2), tmp_path / "m.ncz")
    with pytest.raises(OutputExistsError):
        save_compressed(nn.Linear(2, 2), p)


def _corrupt(path, fn):
    blob = bytearray(path.read_bytes())
    path.write_bytes(bytes(fn(blob)))


def test_truncated_other_version_and_foreign_files(tmp_path):
    p = save_compressed(_pruned_clustered(), tmp_path / "m.ncz")
    good = p.read_bytes()
    _corrupt(p, lambda b: b[: len(b) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_compressed(p)
    body = bytearray(good[:-4])
    body[4:6] = struct.pack("<H", 99)
    p.write_bytes(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
    with pytest.raises(CheckpointError, match="version 99"):
        load_compressed(p)
    p.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointError, match="not a netcompress compressed file"):
        load_compressed(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_compressed(tmp_path / "missing.ncz")


def test_wrong_model_is_clear(tmp_path):
    p = save_compressed(_pruned_clustered(), tmp_path / "m.ncz")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_compressed(p, create_model("lenet5"))


def test_pruned_only_model_is_stored_sparse(tmp_path):
    m = create_model("lenet_300_100")
    prune_(m, Unstructured(sparsity=0.9))
    path = save_compressed(m, tmp_path / "p.ncz")
    ref = effective_state_dict(m)
    back = load_compressed(path)
    assert all(torch.equal(back[k], ref[k]) for k in ref)
    w = next(r for r in compression_table(path) if r["tensor"] == "net.1.weight")
    assert w["encoding"] == "sparse_values" and w["weight_bits"] == 32.0
    assert path.stat().st_size < 0.2 * 266610 * 4  # 10% kept at 32 + ~4 bits
