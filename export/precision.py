"""FP16 and INT8 variants of an FP32 ONNX file, with the well-kept converters.

- FP16: onnxconverter-common, float32 inputs/outputs kept (a Cast at each end).
- INT8: onnxruntime.quantization static QDQ, calibrated on real training images, in two flavours:
  ``cpu``: unsigned 8-bit activations, signed 8-bit per-channel weights (what ONNX Runtime's CPU
  kernels are fastest with); ``tensorrt``: symmetric signed INT8, float biases, Q/DQ on the inputs
  of weighted layers only, checked against TensorRT's Q/DQ rules before it is written
  (export/int8_tensorrt.py says which rules and why these settings).
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxconverter_common import float16
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

from export import int8_tensorrt
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.writeutil import atomic_path

INT8_FLAVOURS = {
    # reduce_range: 7-bit weights, so that AVX2's u8 x s8 multiply-add (vpmaddubsw, which saturates
    # at 16 bits) cannot overflow on CPUs without VNNI, as ONNX Runtime's quantization guide advises.
    "cpu": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True, extra_options={}),
    "tensorrt": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=False,
                     op_types_to_quantize=int8_tensorrt.QUANTIZED_OPS, extra_options=int8_tensorrt.EXTRA_OPTIONS),
}


def save_model(model, path):
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def probs_only(model):
    """The same graph with ``probs`` as its only output (reduced-precision variants serve the
    runtime, which reads ``probs``; a second output fed by the same nodes also trips the FP16
    converter's type propagation)."""
    keep = [o for o in model.graph.output if o.name == PROBS]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    return model


def to_fp16(src, dst):
    model = float16.convert_float_to_float16(probs_only(onnx.load(str(src))), keep_io_types=True)
    onnx.checker.check_model(model)
    save_model(model, dst)
    return dst


class _Batches(CalibrationDataReader):
    def __init__(self, images, batch_size=16):
        self.batches = iter([{INPUT_NAME: images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def to_int8(src, dst, calib_images, flavour="cpu"):
    """Static QDQ quantization calibrated on ``calib_images`` (N, 4, S, S float32, preprocessed)."""
    if flavour not in INT8_FLAVOURS:
        raise ValueError(f"unknown INT8 flavour {flavour!r}; valid: {sorted(INT8_FLAVOURS)}")
    if len(calib_images) == 0:
        raise ValueError("INT8 calibration needs at least one image")
    settings = INT8_FLAVOURS[flavour]
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / "probs.onnx"
        onnx.save(probs_only(onnx.load(str(src))), str(single))
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(single), str(prepared), skip_symbolic_shape=True)
        out = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(out), _Batches(np.ascontiguousarray(calib_images, np.float32)),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=settings["reduce_range"],
                        activation_type=settings["activation_type"], weight_type=settings["weight_type"],
                        calibrate_method=CalibrationMethod.MinMax, extra_options=settings["extra_options"],
                        op_types_to_quantize=settings.get("op_types_to_quantize"))
        quantized = onnx.load(str(out))
        onnx.checker.check_model(quantized)
        if flavour == "tensorrt":
            int8_tensorrt.check_tensorrt_qdq(quantized, dst)
        save_model(quantized, dst)
    return dst
