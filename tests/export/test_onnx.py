import pytest
import torch

from netcompress.core.errors import OutputExistsError
from netcompress.export import check_onnx, ort_session, run_onnx, to_onnx
from netcompress.models import create_model


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_onnxruntime_equals_torch_with_dynamic_batch(tmp_path, name):
    m = create_model(name, in_channels=1, input_size=28).eval()
    path = to_onnx(m, torch.randn(2, 1, 28, 28), tmp_path / "m.onnx")
    x = torch.randn(7, 1, 28, 28)
    got = run_onnx(ort_session(path), x)
    assert got.shape == (7, 10)
    assert check_onnx(m, path, x) < 1e-4


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
