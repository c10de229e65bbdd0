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
