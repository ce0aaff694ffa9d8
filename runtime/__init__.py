"""Lean deployment core: decoding, preprocessing, labels and inference backends.

This package never imports torch, ``train`` or Qt (tests/test_boundaries.py checks it):
a deployment box installs only numpy, opencv and onnxruntime (and TensorRT on GPU hosts).
"""
