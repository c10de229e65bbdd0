"""Real data sets, offline (Fashion-MNIST idx files, any MNIST-format folder, sklearn digits, gensim's text sets)."""
from .datasets import (DATASETS, DEFAULT_FASHION_DIR, Splits, default_dataset, digits, fashion_mnist, mnist_idx,
                       load_dataset, load_idx_folder)
from .idx import read_idx
from .text import Lee50, lee50, pang_lee_polarity

__all__ = ["DATASETS", "DEFAULT_FASHION_DIR", "Lee50", "Splits", "default_dataset", "digits", "fashion_mnist",
           "lee50", "load_dataset", "load_idx_folder", "mnist_idx", "pang_lee_polarity", "read_idx"]
