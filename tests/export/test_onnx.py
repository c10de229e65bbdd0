import pytest
import torch

from netcompress.core.errors import OutputExistsError
from netcompress.export import ort_session, run_onnx, to_onnx
from netcompress.models import create_model


def test_export_refuses_overwrite(tmp_path):
    m = create_model("lenet_300_100")
    p = to_onnx(m, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx")
    with pytest.raises(OutputExistsError):
        to_onnx(m, torch.randn(1, 1, 28, 28), p)


def test_export_writes_no_debug_metadata(tmp_path):
    import onnx

    m = create_model("lenet5", in_channels=1, input_size=28).eval()
    path = to_onnx(m, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    # the exporter's stack traces name local source files: they must not ship
    assert all(len(n.metadata_props) == 0 and not n.doc_string for n in model.graph.node)
    assert len(model.graph.metadata_props) == 0
    assert "zoo.py" not in path.read_bytes().decode("latin-1")


def test_compact_onnx_is_a_pure_renaming_and_smaller(tmp_path):
    import numpy as np
    import onnx

    from netcompress.export import Int8Onnx, compact_onnx, to_int8_onnx

    m = create_model("resnet20", in_channels=1, input_size=28, width=8).eval()
    calib = torch.utils.data.TensorDataset(torch.randn(32, 1, 28, 28), torch.zeros(32, dtype=torch.long))
    src = to_int8_onnx(m, torch.randn(1, 1, 28, 28), tmp_path / "q.onnx", Int8Onnx(calib_batches=1), data=calib)
    out = compact_onnx(src, tmp_path / "c.onnx")
    assert out.stat().st_size < 0.85 * src.stat().st_size
    x = torch.randn(5, 1, 28, 28)
    np.testing.assert_array_equal(run_onnx(ort_session(src), x), run_onnx(ort_session(out), x))
    g = onnx.load(str(out)).graph
    assert [i.name for i in g.input] == ["input"] and [o.name for o in g.output] == ["output"]
    assert max(len(n) for node in g.node for n in list(node.input) + list(node.output)) <= 8
    with pytest.raises(OutputExistsError):
        compact_onnx(src, out)


class _MaskedMean(torch.nn.Module):
    """Two int64 inputs of shape (B, T), like a text encoder's ids and attention mask."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.pos = torch.nn.Embedding(64, 8)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, ids, mask):
        x = self.proj(self.emb(ids) + self.pos.weight[: ids.shape[1]])  # (B, T, 8)
        m = mask.unsqueeze(-1).float()
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def test_two_inputs_with_dynamic_batch_and_seq(tmp_path):
    from netcompress.measure import ort_callable

    m = _MaskedMean().eval()
    ids, mask = torch.randint(0, 50, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    path = to_onnx(m, (ids, mask), tmp_path / "m.onnx", dynamic_dims={0: "batch", 1: "seq"},
                   input_names=["input_ids", "attention_mask"])
    sess = ort_session(path)
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    ids, mask = torch.randint(0, 50, (5, 13)), (torch.rand(5, 13) > 0.3).long()  # other batch and length
    with torch.no_grad():
        expected = m(ids, mask).numpy()
    got = ort_callable(sess)(ids, mask)[0]
    assert got.shape == (5, 8)
    assert abs(got - expected).max() < 1e-5


def test_input_names_must_match_inputs(tmp_path):
    from netcompress.export import ExportError

    with pytest.raises(ExportError, match="input_names has 1 names for 2"):
        to_onnx(_MaskedMean(), (torch.zeros(1, 4, dtype=torch.long),) * 2, tmp_path / "m.onnx", input_names=["x"])


def test_int8_of_a_dynamic_length_graph_leaves_no_files_behind(tmp_path, monkeypatch):
    from netcompress.export import Int8Onnx, quantize_onnx
    from netcompress.measure import ort_callable

    m = _MaskedMean().eval()
    ids, mask = torch.randint(0, 50, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    fp32 = to_onnx(m, (ids, mask), tmp_path / "m.onnx", dynamic_dims={0: "batch", 1: "seq"})
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    # onnxruntime's symbolic shape inference fails on the position slice min(64, seq) and dumps its partial graph
    # into the working directory; quantize_onnx falls back to plain shape inference and keeps the dump in its tmp
    q = quantize_onnx(fp32, tmp_path / "q.onnx", Int8Onnx(static=False))
    assert list(work.iterdir()) == []
    ids = torch.randint(0, 50, (3, 11))
    got = ort_callable(ort_session(q))(ids, torch.ones(3, 11, dtype=torch.long))[0]
    with torch.no_grad():
        assert abs(got - m(ids, torch.ones(3, 11, dtype=torch.long)).numpy()).max() < 0.05


def test_nan_in_a_buffer_is_named_not_called_a_disagreement(tmp_path):
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten()).eval()
    with torch.no_grad():
        m[1].running_var[2] = float("nan")
    with pytest.raises(Exception, match=r"outputs hold NaN/Inf \(the model holds NaN/Inf in 1\.running_var \(1 of 4\)"):
        to_onnx(m, torch.randn(1, 1, 6, 6), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []  # checked before the file is moved into place


@pytest.mark.parametrize("opset", [3, 17, 24, True, "20"])
def test_opset_outside_the_range_is_refused(tmp_path, opset):
    from netcompress.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"choose 18\.\.23"):
        to_onnx(create_model("lenet_300_100"), torch.randn(1, 1, 28, 28), tmp_path / "m.onnx", opset=opset)
    assert list(tmp_path.iterdir()) == []
