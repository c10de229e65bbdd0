import pytest
import torch
from torch import nn

from netcompress.core.errors import CheckpointError, OutputExistsError
from netcompress.core.io import (atomic_torch_save, ensure_writable, load_weights, load_weights_into, safe_torch_load,
                                 save_weights)


def test_save_load_roundtrip_safetensors_and_pt(tmp_path):
    m = nn.Linear(4, 3)
    for suffix in (".safetensors", ".pt"):
        p = save_weights(m, tmp_path / f"w{suffix}")
        state = load_weights(p)
        assert torch.equal(state["weight"], m.weight)
        m2 = load_weights_into(nn.Linear(4, 3), p)
        assert torch.equal(m2.bias, m.bias)


def test_refuses_to_overwrite_without_force(tmp_path):
    p = save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    before = p.read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        save_weights(nn.Linear(2, 2), p)
    assert p.read_bytes() == before
    save_weights(nn.Linear(2, 2), p, force=True)
    assert p.read_bytes() != before


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_corrupt_or_truncated_checkpoint_is_one_clear_error(tmp_path, content):
    p = tmp_path / "c.pt"
    if content is None:  # a real checkpoint cut in half
        atomic_torch_save({"w": torch.randn(100, 100)}, p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    else:
        p.write_bytes(content)
    with pytest.raises(CheckpointError, match="c.pt"):
        safe_torch_load(p)


def test_truncated_safetensors(tmp_path):
    p = save_weights(nn.Linear(50, 50), tmp_path / "w.safetensors")
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(p)


def test_shape_mismatch_names_keys(tmp_path):
    p = save_weights(nn.Linear(4, 3), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"weight: file \(3, 4\) vs model \(3, 5\)"):
        load_weights_into(nn.Linear(5, 3), p)


def test_atomic_save_leaves_no_temp_files(tmp_path):
    atomic_torch_save({"a": torch.ones(3)}, tmp_path / "x.pt")
    assert [f.name for f in tmp_path.iterdir()] == ["x.pt"]


def test_ensure_writable_creates_parents(tmp_path):
    p = ensure_writable(tmp_path / "a" / "b" / "c.txt")
    assert p.parent.is_dir()


def test_valid_file_with_unsafe_type_is_not_called_corrupt(tmp_path):
    import numpy as np

    p = tmp_path / "c.pt"
    torch.save({"x": np.arange(3)}, p)
    with pytest.raises(CheckpointError, match=r"would run code when loaded \(it imports numpy") as info:
        safe_torch_load(p)
    assert "corrupt" not in str(info.value) and "weights_only" not in str(info.value)


def test_failed_write_leaves_neither_file_nor_temporaries(tmp_path):
    from netcompress.core.io import atomic_write

    def write(tmp):
        tmp.write_bytes(b"half")
        (tmp.parent / (tmp.name + ".data")).write_bytes(b"side file an exporter made")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "m.onnx", write)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        from netcompress.core.io import _umask

        _umask.cache_clear()
        p = save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
        _umask.cache_clear()
    assert p.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: others can read the artifacts


def test_disk_full_is_named_with_the_path(tmp_path):
    import errno

    from netcompress.core.errors import DiskFullError
    from netcompress.core.io import atomic_write

    def write(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"disk full \(ENOSPC\).*x\.bin"):
        atomic_write(tmp_path / "x.bin", write)
    assert list(tmp_path.iterdir()) == []


def test_torch_save_failure_on_a_full_disk_is_named(tmp_path, monkeypatch):
    """torch.save reports ENOSPC as 'unexpected pos'; the free space left tells it apart."""
    import os as _os

    from netcompress.core.errors import DiskFullError

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr("netcompress.core.io.os.statvfs", lambda _: Full())
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")))
    with pytest.raises(DiskFullError, match="c.pt"):
        atomic_torch_save({"w": torch.ones(3)}, tmp_path / "c.pt")
    assert _os.listdir(tmp_path) == []


def test_state_dict_of_ints_or_wrong_dtype_is_refused(tmp_path):
    p = tmp_path / "w.pt"
    torch.save({"weight": 3, "bias": 4}, p)
    with pytest.raises(CheckpointError, match="holds a int at key 'weight', not a tensor"):
        load_weights_into(nn.Linear(4, 3), p)
    save_weights({"weight": torch.ones(3, 4, dtype=torch.int64), "bias": torch.ones(3, dtype=torch.bool)},
                 tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="dtype mismatch.*weight: file int64 vs model float32"):
        load_weights_into(nn.Linear(4, 3), tmp_path / "w.safetensors")
