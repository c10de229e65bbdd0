"""Bad input: one clear ConfigError each, and the model is untouched."""
import copy

import pytest
import torch

from netcompress.core.errors import ConfigError
from netcompress.models import create_model
from netcompress.prune import NM, OBD, OBS, SNIP, APoZ, GraSP, Magnitude, Unstructured, prune_

CASES = [
    # (description, config factory, data, message fragments)
    ("sparsity 1.0", lambda: Unstructured(sparsity=1.0), None, ["sparsity", "[0, 1)", "1.0"]),
    ("sparsity -0.1", lambda: Unstructured(sparsity=-0.1), None, ["sparsity", "-0.1"]),
    ("sparsity 95 (percent)", lambda: Unstructured(sparsity=95), None, ["sparsity", "95"]),
    ("sparsity missing", lambda: Unstructured(), None, ["sparsity is required"]),
    ("pattern matches nothing", lambda: Unstructured(sparsity=0.5, include=("fc*",)), None,
     ["'fc*'", "net.1", "net.3", "net.5"]),
    ("exclude matches nothing", lambda: Unstructured(sparsity=0.5, exclude=("head",)), None, ["'head'", "net.1"]),
    ("SNIP without data", lambda: Unstructured(sparsity=0.5, criterion=SNIP()), None, ["SNIP needs data"]),
    ("GraSP without data", lambda: Unstructured(sparsity=0.5, criterion=GraSP()), None, ["GraSP needs data"]),
    ("OBD without data", lambda: Unstructured(sparsity=0.5, criterion=OBD()), None, ["OBD needs data"]),
    ("OBS without data", lambda: Unstructured(sparsity=0.5, criterion=OBS()), None, ["OBS needs data"]),
    ("APoZ without data", lambda: Unstructured(sparsity=0.5, criterion=APoZ()), None, ["APoZ needs data"]),
    ("OBS with x only", lambda: Unstructured(sparsity=0.5, criterion=OBS()), torch.zeros(4, 1, 28, 28),
     ["OBS needs labels"]),
    ("NM on 100 inputs, m=8", lambda: Unstructured(granularity=NM(2, 8)), None,
     ["NM(2, 8)", "net.3.weight (300)", "net.5.weight (100)", "divisible by 8"]),
    ("NM sparsity contradiction", lambda: Unstructured(sparsity=0.9, granularity=NM(2, 4)), None, ["contradicts"]),
    ("NM n >= m", lambda: Unstructured(granularity=NM(4, 4)), None, ["0 < n < m"]),
    ("OBS bad block", lambda: Unstructured(sparsity=0.5, criterion=OBS(block_size=0)), None, ["block_size"]),
    ("Magnitude p=3", lambda: Unstructured(sparsity=0.5, criterion=Magnitude(p=3)), None, ["Magnitude.p"]),
    ("criterion as string", lambda: Unstructured(sparsity=0.5, criterion="magnitud"), None, ["unknown Criterion 'magnitud'. Did you mean 'Magnitude'"]),
]


@pytest.mark.parametrize("desc,make,data,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_model_untouched(desc, make, data, fragments):
    model = create_model("lenet_300_100")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError) as info:
        prune_(model, make(), data=data)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_config_type_names_known():
    with pytest.raises(ConfigError, match="Unstructured"):
        prune_(create_model("lenet_300_100"), object())
