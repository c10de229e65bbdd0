"""Real data sets, offline: Fashion-MNIST (or any MNIST-format idx folder) and sklearn digits.

Nothing downloads. Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``; a user's own
MNIST-format files work by pointing ``data_dir`` at them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..core.errors import DataError
from ..core.registry import Registry
from .idx import read_idx

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_ENV = "NETCOMPRESS_DATA_DIR"
DATASETS: Registry = Registry("data set", DataError)

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class Splits:
    """Seeded train/val/test splits as normalised tensors, shapes (N, C, H, W) and (N,)."""

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: float
    std: float
    source: str = ""  # where the files came from (a folder), so a run on other data is never named after this one

    @property
    def label(self) -> str:
        """``name`` and, where it came from a folder, that folder: what outputs call the data."""
        return f"{self.name} ({self.source})" if self.source else self.name

    def loaders(self, batch_size: int = 128, eval_batch_size: int = 512, seed: int = 0):
        """(train, val, test) DataLoaders; the train order is seeded."""
        gen = torch.Generator().manual_seed(seed)
        return (DataLoader(self.train, batch_size=batch_size, shuffle=True, generator=gen),
                DataLoader(self.val, batch_size=eval_batch_size),
                DataLoader(self.test, batch_size=eval_batch_size))

    def calibration(self, n: int = 512) -> torch.Tensor:
        """The first ``n`` training images: a fixed calibration batch for data-hungry methods."""
        return self.train.tensors[0][:n]


def _find(folder: Path, stem: str) -> Path:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    raise DataError(
        f"{stem}[.gz] not found in {folder}. Install Fashion-MNIST with "
        "'apt-get install dataset-fashion-mnist' (or 'make data'), or pass --data-dir "
        f"(env {DATA_ENV}) pointing at a folder of MNIST-format idx files")


def load_idx_folder(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images uint8 (N,H,W), labels), 'test': (...)} from an MNIST-format folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist. Install Fashion-MNIST with 'apt-get install "
            f"dataset-fashion-mnist' (or 'make data'), or pass --data-dir (env {DATA_ENV})")
    out = {}
    for split, (img, lab) in _IDX_NAMES.items():
        x, y = read_idx(_find(folder, img)), read_idx(_find(folder, lab))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        out[split] = (x, y)
    return out


def _split(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(x) * val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def _make_splits(name, train_xy, test_xy, num_classes, val_fraction, seed, mean=None, std=None,
                 source: str = "") -> Splits:
    xtr, ytr = train_xy
    (xtr, ytr), (xva, yva) = _split(xtr, ytr, val_fraction, seed)
    # statistics of the training split only, so val/test stay unseen
    mean = float(xtr.mean()) if mean is None else mean
    std = float(xtr.std()) if std is None else std
    norm = lambda t: ((t - mean) / std).contiguous()  # noqa: E731
    xte, yte = test_xy
    return Splits(name, TensorDataset(norm(xtr), ytr), TensorDataset(norm(xva), yva),
                  TensorDataset(norm(xte), yte), num_classes, tuple(xtr.shape[1:]), mean, std, source)


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir or os.environ.get(DATA_ENV) or DEFAULT_FASHION_DIR).expanduser()


def _idx_splits(folder: Path, val_fraction: float, seed: int) -> Splits:
    """Splits of an idx folder, named ``fashion_mnist`` only when it is the Fashion-MNIST package's folder, else
    ``mnist_idx``; the folder is the source either way."""
    raw = load_idx_folder(folder)
    try:
        name = "fashion_mnist" if folder.resolve() == DEFAULT_FASHION_DIR.resolve() else "mnist_idx"
    except OSError:
        name = "mnist_idx"
    to_t = lambda a: (torch.from_numpy(a[0].astype(np.float32) / 255.0).unsqueeze(1),  # noqa: E731
                      torch.from_numpy(a[1].astype(np.int64)))
    train, test = to_t(raw["train"]), to_t(raw["test"])
    if len(train[1]) == 0 or len(test[1]) == 0:
        raise DataError(f"{folder}: the train or test files hold no images; pass a folder of MNIST-format idx files")
    if int(train[1].min()) < 0 or int(test[1].min()) < 0:
        raise DataError(f"{folder}: labels must be class indices >= 0")
    num_classes = int(max(int(train[1].max()), int(test[1].max()))) + 1
    return _make_splits(name, train, test, num_classes, val_fraction, seed, source=str(folder))


@DATASETS.register("fashion_mnist")
def fashion_mnist(data_dir: str | Path | None = None, val_fraction: float = 1 / 12, seed: int = 0) -> Splits:
    """Fashion-MNIST 60k/10k (train is split into 55k train + 5k val), images (N, 1, 28, 28), from the
    Debian package's folder. Another folder (``data_dir``, env NETCOMPRESS_DATA_DIR) is read the same way
    but named ``mnist_idx``: this code cannot tell what its files hold."""
    return _idx_splits(resolve_data_dir(data_dir), val_fraction, seed)


@DATASETS.register("mnist_idx")
def mnist_idx(data_dir: str | Path | None = None, val_fraction: float = 1 / 12, seed: int = 0) -> Splits:
    """Any folder of MNIST-format idx files (MNIST, KMNIST, your own): ``data_dir`` or env NETCOMPRESS_DATA_DIR
    is required (it never falls back to Fashion-MNIST). The folder is named as the data's source."""
    folder = data_dir or os.environ.get(DATA_ENV)
    if not folder:
        raise DataError(f"data set 'mnist_idx' needs a folder: pass --data-dir DIR (data_dir: in a recipe, or env "
                        f"{DATA_ENV}) holding train-images-idx3-ubyte[.gz] and the other three MNIST-format files")
    return _idx_splits(Path(folder).expanduser(), val_fraction, seed)


@DATASETS.register("digits")
def digits(val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
           image_size: int = 8, data_dir=None) -> Splits:
    """sklearn's 8x8 digits (1797 images), shipped inside scikit-learn: always available.

    ``image_size=28`` upsamples bilinearly so the 28x28 zoo models run on it unchanged."""
    from sklearn.datasets import load_digits

    if data_dir is not None:
        raise DataError(f"data set 'digits' ships inside scikit-learn and reads no folder; drop data_dir "
                        f"({data_dir}) or use mnist_idx for a folder of idx files")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                            align_corners=False)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))
    n_test = int(round(len(x) * test_fraction))
    test = (x[perm[:n_test]], y[perm[:n_test]])
    train = (x[perm[n_test:]], y[perm[n_test:]])
    return _make_splits("digits", train, test, 10, val_fraction, seed,
                        source="" if image_size == 8 else f"sklearn 8x8 upsampled to {image_size}x{image_size}")


def load_dataset(name: str = "fashion_mnist", **kwargs) -> Splits:
    """Load a registered data set by name (``fashion_mnist``, ``mnist_idx``, ``digits``)."""
    return DATASETS.get(name)(**kwargs)


def default_dataset(data_dir=None, seed: int = 0, image_size: int = 28) -> Splits:
    """``data_dir``'s idx files when given, else Fashion-MNIST when it is installed, else digits at ``image_size``."""
    if data_dir is not None:
        return mnist_idx(data_dir=data_dir, seed=seed)
    if resolve_data_dir(None).is_dir():
        return fashion_mnist(seed=seed)
    return digits(seed=seed, image_size=image_size)
