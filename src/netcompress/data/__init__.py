"""Real data sets, offline (Fashion-MNIST idx files, any MNIST-format folder, sklearn digits)."""
from .datasets import (DATASETS, DEFAULT_FASHION_DIR, Splits, default_dataset, digits, fashion_mnist,
                       load_dataset, load_idx_folder)
from .idx import read_idx

__all__ = ["DATASETS", "DEFAULT_FASHION_DIR", "Splits", "default_dataset", "digits", "fashion_mnist",
           "load_dataset", "load_idx_folder", "read_idx"]
