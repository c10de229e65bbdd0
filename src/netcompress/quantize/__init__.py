"""Quantization: affine primitives, observers, fake-quant, PTQ, QAT, binary/ternary, power-of-two
(INQ), mixed precision, k-means weight sharing and Huffman coding, real int8 through onnxruntime.

Everything goes through one verb, ``quantize_(model, config, data=None)``, dispatched on the config's
type (``PTQ``, ``QAT``, ``Binary``, ``Ternary``, ``Pow2``, ``Clustered``, ``Float16``, ``MixedPrecision``).
"""
from .api import QUANTIZE, QuantizeConfig, quantize_
from .binary import TTQ, TWN, Binary, ClipShadow, Glorot, Pow2, Ternary, TernaryMethod, clip_shadow_weights_
from .bn_fold import fold_bn_
from .cluster import Clustered, SharedWeights, bake_clusters_, centroid_parameters, kmeans_1d, shared_weights
from .fake import FakeQuant, WeightFakeQuant, dequantize_, quantizable_layers, set_quant_enabled
from .observers import MSE, MinMax, MovingAverage, Observer, Percentile, RangeTracker
from .primitives import (Granularity, PerChannel, PerTensor, QuantSpec, dequantize, fake_quantize, qparams, quantize,
                         sqnr_db)
from .ptq import PTQ, calibrate, calibration_stats, sqnr_report, write_stats_file
from .weight_only import BlockQuant, WeightOnly, block_quantizers, remove_block_quant_
from .qat import QAT, Float16, FreezeBN, MixedPrecision, convert_qat_, freeze_bn_

__all__ = ["BlockQuant", "WeightOnly", "block_quantizers", "remove_block_quant_", "MSE", "PTQ", "QAT", "QUANTIZE", "QuantizeConfig", "ClipShadow", "TernaryMethod", "Observer", "Granularity", "TTQ", "TWN", "Binary", "Clustered", "FakeQuant", "Float16",
           "FreezeBN", "Glorot", "MinMax", "MixedPrecision", "MovingAverage", "PerChannel", "PerTensor",
           "Percentile", "Pow2", "QuantSpec", "RangeTracker", "SharedWeights", "Ternary", "WeightFakeQuant",
           "bake_clusters_", "calibrate", "calibration_stats", "centroid_parameters", "clip_shadow_weights_",
           "convert_qat_", "dequantize", "dequantize_", "fake_quantize", "fold_bn_", "freeze_bn_", "kmeans_1d",
           "qparams", "quantizable_layers", "quantize", "quantize_", "set_quant_enabled", "shared_weights",
           "sqnr_db", "sqnr_report", "write_stats_file"]
