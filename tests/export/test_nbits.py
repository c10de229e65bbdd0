"""4- and 8-bit weight-only ONNX: the codes we write are what onnxruntime's kernels compute with, and the file holds
the bytes the bit width predicts."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from netcompress.core.errors import ConfigError
from netcompress.export import ort_session
from netcompress.export.nbits import NBitsOnnx, block_quantize, dequantize_blocks, to_nbits_onnx


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(64, 96)
        self.fc1 = nn.Linear(96, 128)  # K=96: three blocks of 32, or a padded block of 64
        self.fc2 = nn.Linear(128, 64, bias=False)
        self.head = nn.Linear(64, 5)  # 320 weights: stays fp32 (min_elements)

    def forward(self, ids):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(self.emb(ids))))))


def _reference(model: Tiny, ids: torch.Tensor, cfg: NBitsOnnx) -> np.ndarray:
    """The model with every quantized weight replaced by its dequantized codes, in numpy."""
    def deq(w):
        q, s, z = block_quantize(w, cfg.bits, cfg.block_size, cfg.symmetric)
        return dequantize_blocks(q, s, z, cfg.bits, w.shape[1])

    p = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    h = deq(p["emb.weight"])[ids.numpy()]
    h = np.maximum(h @ deq(p["fc1.weight"]).T + p["fc1.bias"], 0)
    h = np.maximum(h @ deq(p["fc2.weight"]).T, 0)
    return h @ p["head.weight"].T + p["head.bias"]


@pytest.mark.parametrize("cfg", [NBitsOnnx(), NBitsOnnx(symmetric=False), NBitsOnnx(block_size=64),
                                 NBitsOnnx(bits=8, block_size=16), NBitsOnnx(accuracy_level=0)],
                         ids=["4b-sym-32", "4b-asym-32", "4b-sym-64-padded", "8b-16", "4b-fp32-compute"])
def test_onnxruntime_computes_with_our_codes(cfg, tmp_path):
    model = Tiny().eval()
    ids = torch.randint(0, 64, (3, 7))
    path = to_nbits_onnx(model, ids, tmp_path / "m.onnx", cfg, dynamic_dims={0: "batch", 1: "seq"})
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MatMulNBits") == 2 and "GatherBlockQuantized" in ops and ops.count("MatMul") + ops.count(
        "Gemm") == 1, ops
    got = ort_session(path).run(None, {"input": ids.numpy()})[0]
    ref = _reference(model, ids, cfg)
    tol = 2e-2 if cfg.accuracy_level == 4 else 1e-4  # accuracy level 4 quantizes activations to int8 in the kernel
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()
    other = ort_session(path).run(None, {"input": torch.randint(0, 64, (2, 11)).numpy()})[0]
    assert other.shape == (2, 11, 5)  # batch and sequence stay dynamic


def test_file_bytes_follow_the_bit_width(tmp_path):
    model = Tiny().eval()
    ids = torch.randint(0, 64, (2, 5))
    sizes = {}
    for bits in (4, 8):
        path = to_nbits_onnx(model, ids, tmp_path / f"m{bits}.onnx", NBitsOnnx(bits=bits))
        sizes[bits] = path.stat().st_size
    quantized = 64 * 96 + 96 * 128 + 128 * 64
    scales = 4 * quantized // 32
    fp32_rest = 4 * (128 + 64 * 5 + 5)
    for bits, size in sizes.items():
        predicted = quantized * bits // 8 + scales + fp32_rest
        assert predicted <= size <= predicted * 1.02 + 4096, (bits, size, predicted)


def test_symmetric_codes_keep_zero_and_extremes_exact():
    w = np.array([[0.0, 0.7, -0.7, 0.35, 0.1, 0.0, 0.0, 0.0]], np.float32)
    q, s, z = block_quantize(w, 4, 8, True)
    back = dequantize_blocks(q, s, z, 4, 8)
    assert back[0, 0] == 0 and np.isclose(back[0, 1], 0.7) and np.isclose(back[0, 2], -0.7)


def test_nothing_to_quantize_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no MatMul/Gemm/Gather weight of at least"):
        to_nbits_onnx(nn.Sequential(nn.Linear(4, 2)), torch.randn(1, 4), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="block_size must be one of 16, 32, 64, 128, 256"):
        NBitsOnnx(block_size=48)


@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_only_in_torch_is_what_the_file_computes(symmetric, tmp_path):
    """quantize_(WeightOnly) simulates the shipped codes exactly: torch and onnxruntime (fp32 compute) agree, and only
    the layers torch quantized are stored at 4 bits."""
    import netcompress as nc
    from netcompress.quantize import WeightOnly

    model = Tiny().eval()
    ids = torch.randint(0, 64, (4, 9))
    dense = model(ids).detach()
    report = nc.quantize_(model, WeightOnly(bits=4, block_size=32, symmetric=symmetric, exclude=("fc2",)))
    assert set(report.details["bits"]) == {"emb", "fc1", "head"}
    simulated = model(ids).detach()
    assert not torch.allclose(simulated, dense, atol=1e-4)  # the codes change the output
    path = to_nbits_onnx(model, ids, tmp_path / "m.onnx", NBitsOnnx(accuracy_level=0))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MatMulNBits") == 2 and ops.count("GatherBlockQuantized") == 1 and "MatMul" in ops, ops
    got = ort_session(path).run(None, {"input": ids.numpy()})[0]
    assert np.abs(got - simulated.numpy()).max() < 1e-4
