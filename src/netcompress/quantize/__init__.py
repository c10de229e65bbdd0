"""Quantization: affine primitives, observers, fake-quant, PTQ, QAT, binary/ternary, power-of-two
(INQ), mixed precision, k-means weight sharing and Huffman coding, real int8 through onnxruntime.

Everything goes through one verb, ``quantize_(model, config, data=None)``, dispatched on the config's
type (``PTQ``, ``QAT``, ``Binary``, ``Ternary``, ``Pow2``, ``Clustered``, ``Float16``, ``MixedPrecision``).
"""
from .api import QUANTIZE_TRANSFORMS, quantize_
from .bn_fold import fold_bn_
from .cluster import Clustered, SharedWeights, bake_clusters_, centroid_parameters, kmeans_1d, shared_weights
from .fake import FakeQuant, WeightFakeQuant, dequantize_, quantizable_layers, set_quant_enabled
from .observers import MSE, MinMax, MovingAverage, Percentile, RangeTracker
from .primitives import (PerChannel, PerTensor, QuantSpec, dequantize, fake_quantize, qparams, quantize,
                         sqnr_db)
from .ptq import PTQ, calibrate, calibration_stats, sqnr_report, write_stats_file

__all__ = ["MSE", "PTQ", "QUANTIZE_TRANSFORMS", "FakeQuant", "MinMax", "MovingAverage", "PerChannel",
           "PerTensor", "Percentile", "QuantSpec", "RangeTracker", "WeightFakeQuant", "calibrate",
           "calibration_stats", "dequantize", "dequantize_", "fake_quantize", "fold_bn_", "qparams",
           "quantizable_layers", "quantize", "quantize_", "set_quant_enabled", "sqnr_db", "sqnr_report",
           "write_stats_file"]
