import pytest
import torch

from netcompress.core.errors import CheckpointError, OutputExistsError
from netcompress.measure import file_bytes
from netcompress.models import create_model
from netcompress.prune import Global, Unstructured, bake_, prune_
from netcompress.prune.sparse import (CSR, RelativeIndex, SparseLinear, load_sparse, load_sparse_into,
                                      plain_state_dict, save_sparse, sparsify_linears_)


@pytest.mark.parametrize("encoding", [CSR(), RelativeIndex(8), RelativeIndex(4)], ids=["csr", "rel8", "rel4"])
@pytest.mark.parametrize("model_name", ["lenet_300_100", "lenet5"])
def test_roundtrip_exact_and_smaller(tmp_path, encoding, model_name):
    m = create_model(model_name)
    dense_path = tmp_path / "dense.safetensors"
    from netcompress.core.io import save_weights
    save_weights(m, dense_path)
    prune_(m, Unstructured(sparsity=0.95, scope=Global()))
    path = save_sparse(m, tmp_path / "m.safetensors", encoding=encoding)
    state = load_sparse(path)
    expect = plain_state_dict(m)
    assert state.keys() == expect.keys()
    assert all(torch.equal(state[k], expect[k]) for k in expect)
    fresh = load_sparse_into(create_model(model_name), path)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(fresh(x), m(x))
    # 5% of weights kept: index + value bytes must beat dense fp32 by > 6x (CSR: 6 B/nnz, rel4: ~4.5 B)
    assert file_bytes(dense_path) / file_bytes(path) > 6


def test_relative_index_fillers_for_long_gaps(tmp_path):
    lin = torch.nn.Linear(1000, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0], lin.weight[0, 999], lin.weight[1, 600] = 1.5, -2.0, 3.0  # gaps of 998 and 600
    for enc in (RelativeIndex(4), RelativeIndex(8)):
        path = save_sparse(lin, tmp_path / f"{enc.bits}.safetensors", encoding=enc)
        assert torch.equal(load_sparse(path)["weight"], lin.weight)


def test_refuses_overwrite_and_bad_files(tmp_path):
    m = create_model("lenet_300_100")
    path = save_sparse(m, tmp_path / "m.safetensors")
    with pytest.raises(OutputExistsError):
        save_sparse(m, path)
    save_sparse(m, path, force=True)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sparse(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sparse(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("shape", [(5, 16), (3, 7, 16)])
def test_sparse_linear_matches_dense(shape):
    lin = torch.nn.Linear(16, 8)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(8, 16) > 0.7)
    x = torch.randn(*shape)
    assert torch.allclose(SparseLinear.from_dense(lin)(x), lin(x), atol=1e-5)


def test_sparsify_linears_replaces_only_sparse_layers():
    m = create_model("lenet_300_100")
    prune_(m, Unstructured(sparsity=0.95, include=("net.1",)))
    x = torch.randn(4, 1, 28, 28)
    ref = m(x).detach()
    with pytest.raises(Exception, match="bake_"):
        sparsify_linears_(m)
    bake_(m)
    assert sparsify_linears_(m, min_sparsity=0.9) == ["net.1"]
    assert isinstance(m.net[1], SparseLinear) and type(m.net[3]) is torch.nn.Linear
    assert torch.allclose(m(x), ref, atol=1e-5)
