"""Real int8 through onnxruntime: the QDQ graph, calibrated by our observers, agrees with torch."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from netcompress.core.errors import ConfigError, DataError
from netcompress.export import Int8Onnx, ort_session, run_onnx, to_int8_onnx
from netcompress.quantize import MSE, PTQ, Percentile, quantize_


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10)).eval()


def test_static_qdq_u8_s8_per_channel_matches_torch_fake_quant(tmp_path, digits28):
    m = _mlp()
    x8 = torch.nn.functional.avg_pool2d(digits28.train.tensors[0][:256], 3, 3, padding=1)[:, :, :8, :8]
    calib = list(x8.split(64))
    path = to_int8_onnx(m, x8[:4], tmp_path / "q.onnx", Int8Onnx(), data=calib)
    g = onnx.load(str(path))
    ops = {n.op_type for n in g.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in g.graph.initializer}
    w_q = [i for i in g.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert w_q, "weights are stored as int8"
    act_q = [n for n in g.graph.node if n.op_type == "QuantizeLinear"]
    assert all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in act_q if len(n.input) > 2)
    got = run_onnx(ort_session(path), x8)
    # torch fake-quant of the same scheme (u8 per-tensor activations, s8 per-channel weights)
    fq = _mlp()
    quantize_(fq, PTQ(), data=calib)
    ref = fq(x8).detach().numpy()
    out_q = next(n for n in g.graph.node if n.op_type == "QuantizeLinear" and n.input[0].startswith("output"))
    out_step = float(onnx.numpy_helper.to_array(inits[out_q.input[1]]))  # the int8 graph's output step
    assert np.abs(got - ref).max() <= out_step
    assert np.abs(got - m(x8).detach().numpy()).max() <= 4 * out_step


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    from netcompress.export import to_onnx

    return to_onnx(_mlp(), torch.randn(2, 1, 8, 8), tmp_path_factory.mktemp("onnx") / "f.onnx")


def test_observer_choice_changes_ranges(fp32_onnx):
    from netcompress.export import observe_onnx

    p = fp32_onnx
    x = torch.randn(64, 1, 8, 8)
    x[0, 0, 0, 0] = 30.0  # one outlier pixel
    data = [x]
    r_minmax = observe_onnx(p, data)
    r_pct = observe_onnx(p, data, Percentile(99.0))
    name = "input"
    assert r_minmax[name][1] == pytest.approx(30.0)
    assert r_pct[name][1] < 5.0


def test_dynamic_int8(tmp_path, fp32_onnx):
    from netcompress.export import quantize_onnx

    m = _mlp()
    x = torch.randn(3, 1, 8, 8)
    path = quantize_onnx(fp32_onnx, tmp_path / "d.onnx", Int8Onnx(static=False))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    assert np.abs(run_onnx(ort_session(path), x) - m(x).detach().numpy()).max() < 0.05


def test_static_needs_data_and_valid_types(tmp_path):
    with pytest.raises(DataError, match="calibration"):
        to_int8_onnx(_mlp(), torch.randn(1, 1, 8, 8), tmp_path / "x.onnx", Int8Onnx())
    with pytest.raises(ConfigError, match="activation_type"):
        Int8Onnx(activation_type="int4")
    with pytest.raises(ConfigError, match=r"quant_format must be one of 'QDQ', 'QOperator'; got 'QLinear'"):
        Int8Onnx(quant_format="QLinear")


def test_qoperator_format_writes_qlinear_ops_with_the_qdq_outputs(tmp_path, digits28):
    x = digits28.train.tensors[0][:128]
    calib = list(x.split(32))
    model = _TinyResNet().eval()
    paths = {f: to_int8_onnx(model, x[:2], tmp_path / f"{f}.onnx",
                             Int8Onnx(quant_format=f, amx_conv_channels=None), data=calib)
             for f in ("QDQ", "QOperator")}
    ops = {f: {n.op_type for n in onnx.load(str(p)).graph.node} for f, p in paths.items()}
    assert "QLinearConv" in ops["QOperator"]
    assert "QLinearConv" not in ops["QDQ"] and "DequantizeLinear" in ops["QDQ"]
    got = {f: run_onnx(ort_session(p), x[:64]) for f, p in paths.items()}
    assert np.abs(got["QDQ"] - got["QOperator"]).max() <= 1e-5  # onnxruntime runs the same int8 kernels


class _TinyResNet(nn.Module):
    """conv-bn-relu, a residual add, global average pooling, a linear head: ResNet-20's int8 pattern."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(self.body(x) + x)
        return self.fc(self.pool(x).flatten(1))


def _optimized_ops(path, tmp_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


def test_int8_resnet_graph_stays_int8_from_input_to_logits(tmp_path, digits28):
    """After onnxruntime's optimizations no DequantizeLinear -> float op -> QuantizeLinear round trip
    is left between quantized ops: one Q at the input, one DQ at the logits; the pooling is int8 too."""
    m = _TinyResNet().eval()
    x = digits28.train.tensors[0][:256]
    path = to_int8_onnx(m, x[:2], tmp_path / "q.onnx", Int8Onnx(), data=list(x.split(64)))
    ops = _optimized_ops(path, tmp_path)
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1, ops
    assert {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm"} <= set(ops), ops
    assert not {"Conv", "Add", "ReduceMean", "GlobalAveragePool", "Gemm", "Relu"} & set(ops), ops
    # and it still computes the model: within a few output steps of torch fp32
    got = run_onnx(ort_session(path), x[:64])
    g = onnx.load(str(path))
    inits = {i.name: i for i in g.graph.initializer}
    out_q = next(n for n in g.graph.node if n.op_type == "QuantizeLinear" and n.input[0].startswith("output"))
    out_step = float(onnx.numpy_helper.to_array(inits[out_q.input[1]]))
    assert np.abs(got - m(x[:64]).detach().numpy()).max() <= 4 * out_step


@pytest.mark.parametrize("axes,keepdims,rewritten", [([2, 3], 1, True), ([-1, -2], 1, True), ([1], 1, False),
                                                    ([2, 3], 0, False)])
def test_only_spatial_means_become_global_average_pool(axes, keepdims, rewritten):
    from onnx import TensorProto, helper

    from netcompress.export.quantized import spatial_means_to_gap

    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    assert spatial_means_to_gap(model) == int(rewritten)
    assert [n.op_type for n in model.graph.node] == ["GlobalAveragePool" if rewritten else "ReduceMean"]


class _Attention(torch.nn.Module):
    """One self-attention block with a residual LayerNorm: the transformer patterns the int8 path must handle."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.qkv, self.out, self.ln = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d), torch.nn.LayerNorm(d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
        return self.ln(x + self.out(att @ v))


def test_activation_matmuls_quantized_only_when_asked(tmp_path):
    from netcompress.export import quantize_onnx, to_onnx

    torch.manual_seed(0)
    m, x = _Attention().eval(), torch.randn(2, 8, 16)
    fp32 = to_onnx(m, x, tmp_path / "att.onnx")
    fp32_matmuls = sum(n.op_type == "MatMul" for n in onnx.load(str(fp32)).graph.node)
    left = {}
    for flag in (False, True):
        path = quantize_onnx(fp32, tmp_path / f"att_{flag}.onnx", Int8Onnx(static=False, activation_matmuls=flag))
        left[flag] = sum(n.op_type == "MatMul" for n in onnx.load(str(path)).graph.node)
        assert np.abs(run_onnx(ort_session(path), x) - m(x).detach().numpy()).max() < 0.1
    assert fp32_matmuls == 4  # qkv, QK^T, AV, out
    assert left[False] == 2 and left[True] == 0  # the two activation x activation MatMuls stay fp32 by default


def test_ort_session_leaves_residual_layernorm_unfused(tmp_path):
    from netcompress.export import to_onnx

    m, x = _Attention().eval(), torch.randn(2, 8, 16)
    fp32 = to_onnx(m, x, tmp_path / "att.onnx")
    ort_session(fp32, optimized_path=tmp_path / "ran.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "ran.onnx")).graph.node]
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops


class _WideNarrow(nn.Module):
    """A 16-channel conv then a 64-channel one: only the wide one should take onnxruntime's QGEMM (AMX) path."""

    def __init__(self):
        super().__init__()
        self.narrow = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU())
        self.wide = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return self.wide(self.narrow(x))


def _conv_weight_zero_points(path) -> list[np.ndarray]:
    g = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
    producer = {o: n for n in g.graph.node for o in n.output}
    return [inits[producer[n.input[1]].input[2]] for n in g.graph.node if n.op_type == "Conv"]


def test_wide_conv_weights_get_zero_point_minus_one_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    m, x = _WideNarrow().eval(), torch.rand(64, 4, 12, 12)
    calib = list(x.split(16))
    paths = {c: to_int8_onnx(m, x[:2], tmp_path / f"q_{c}.onnx", Int8Onnx(amx_conv_channels=c), data=calib)
             for c in (None, 64)}
    narrow, wide = _conv_weight_zero_points(paths[64])
    assert (narrow == 0).all() and wide.shape == (64,) and (wide == -1).all()
    assert all((z == 0).all() for z in _conv_weight_zero_points(paths[None]))
    # the same dequantized weights, so the same model: within one output step (the two kernels round alike)
    g = onnx.load(str(paths[None]))
    inits = {i.name: i for i in g.graph.initializer}
    out_q = [n for n in g.graph.node if n.op_type == "QuantizeLinear"][-1]
    step = float(onnx.numpy_helper.to_array(inits[out_q.input[1]]))
    a, b = run_onnx(ort_session(paths[None]), x), run_onnx(ort_session(paths[64]), x)
    assert np.abs(a - b).max() <= step + 1e-6


def test_amx_conv_channels_auto_follows_the_cpu(monkeypatch):
    from netcompress.export import quantized

    monkeypatch.setattr(quantized, "cpu_has_amx_int8", lambda: True)
    assert quantized._amx_channels(Int8Onnx()) == 64  # the default is "auto"
    monkeypatch.setattr(quantized, "cpu_has_amx_int8", lambda: False)
    assert quantized._amx_channels(Int8Onnx()) is None
    assert quantized._amx_channels(Int8Onnx(amx_conv_channels=32)) == 32
    with pytest.raises(ConfigError, match="amx_conv_channels"):
        Int8Onnx(amx_conv_channels=0)


def test_fp32_narrow_convs_leaves_only_the_stem_in_float(tmp_path, digits28):
    m = _TinyResNet().eval()
    x = digits28.train.tensors[0][:128]
    path = to_int8_onnx(m, x[:2], tmp_path / "q.onnx", Int8Onnx(fp32_narrow_convs=True), data=list(x.split(64)))
    ops = _optimized_ops(path, tmp_path)
    assert ops.count("QLinearConv") == 1 and ops.count("Conv") == 1, ops  # the body int8, the 1-channel stem fp32
    assert np.abs(run_onnx(ort_session(path), x[:16]) - m(x[:16]).detach().numpy()).max() < 0.2
