import gzip
import struct

import numpy as np
import pytest
import torch

from netcompress.core.errors import DataError
from netcompress.data import digits, fashion_mnist, load_dataset, read_idx
from tests.conftest import requires_fashion


def _write_idx(path, arr: np.ndarray, gz=False):
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _fake_mnist_folder(folder, n_train=24, n_test=12):
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8), gz=True)


def test_idx_roundtrip_plain_and_gz(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", arr)
    _write_idx(tmp_path / "b.gz", arr, gz=True)
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    assert np.array_equal(read_idx(tmp_path / "b.gz"), arr)


def test_idx_truncated_and_bad_magic(tmp_path):
    _write_idx(tmp_path / "a", np.zeros((5, 4), np.uint8))
    raw = (tmp_path / "a").read_bytes()
    (tmp_path / "t").write_bytes(raw[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t")
    (tmp_path / "m").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "m")


def test_users_own_mnist_format_folder(tmp_path):
    _fake_mnist_folder(tmp_path)
    s = load_dataset("mnist_idx", data_dir=tmp_path, val_fraction=0.25)
    assert (len(s.train), len(s.val), len(s.test)) == (18, 6, 12)
    assert s.input_shape == (1, 28, 28)
    # normalised with training statistics
    assert abs(float(s.train.tensors[0].mean())) < 1e-5


def test_missing_data_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*--data-dir"):
        fashion_mnist(data_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        fashion_mnist(data_dir=tmp_path / "empty")


def test_unknown_dataset():
    with pytest.raises(DataError, match="Did you mean 'digits'"):
        load_dataset("digit")


def test_digits_splits_are_seeded_and_disjoint():
    a, b = digits(seed=3), digits(seed=3)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    c = digits(seed=4)
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])
    assert digits(image_size=28).input_shape == (1, 28, 28)


@requires_fashion
def test_fashion_mnist_real_files():
    s = fashion_mnist()
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000)
    assert s.num_classes == 10 and s.input_shape == (1, 28, 28)
    assert torch.bincount(s.test.tensors[1]).tolist() == [1000] * 10


def test_mnist_idx_needs_a_folder(monkeypatch):
    """It never falls back to Fashion-MNIST."""
    monkeypatch.delenv("NETCOMPRESS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="needs a folder.*--data-dir"):
        load_dataset("mnist_idx")


@pytest.mark.parametrize("name", ["mnist_idx", "fashion_mnist"])
def test_a_folder_is_named_by_what_it_is(tmp_path, name):
    """Only the Fashion-MNIST package's folder is called fashion_mnist; any other carries its path."""
    _fake_mnist_folder(tmp_path)
    s = load_dataset(name, data_dir=tmp_path)
    assert (s.name, s.source, s.label) == ("mnist_idx", str(tmp_path), f"mnist_idx ({tmp_path})")


def test_digits_refuses_a_folder(tmp_path):
    with pytest.raises(DataError, match="reads no folder"):
        load_dataset("digits", data_dir=tmp_path)
