"""FP16 and INT8 variants of an FP32 ONNX file, with the well-kept converters.

- FP16: onnxconverter-common, the uint8 input and float32 output kept (a Cast to FP16 after the
  normalisation, one to float32 at the end). The normalisation (``/normalize/`` nodes) stays in
  float32 (``node_block_list``): the converter would otherwise leave its uint8 Cast saying float32
  with an FP16 output, and in FP16 1/255 and the mean and std would lose bits the FP32 file keeps.
- INT8: onnxruntime.quantization static QDQ, calibrated on real training images, in three
  flavours (``INT8_FLAVOURS``): ``cpu-vnni`` for ONNX Runtime on CPUs whose u8 x s8 dot products
  cannot saturate (AVX512-VNNI, AVX-VNNI, AMX), ``cpu-avx2`` for the others (7-bit weights,
  ``reduce_range``), ``tensorrt`` (symmetric signed INT8, float biases, Q/DQ on the inputs of
  weighted layers only, checked against TensorRT's Q/DQ rules before it is written;
  export/int8_tensorrt.py says which rules and why these settings). docs/int8.md has the
  measurements behind the CPU settings.

Which parts stay in float (``keep_float``; docs/int8.md has the measurements): CBAM's gates
(``attention-gates``: the MLP on pooled statistics, the 2-channel 7x7 convolution, the sigmoids
and the concat feeding that convolution; small tensors, where 8 bits would add requantizations and
save nothing) and the head (everything after the last convolution: pooling, the linear layer, the
sigmoid; negligible work, and quantized it moves every probability in steps of 1/255). CBAM's
pooling and its two products over whole feature maps run in 8 bits, through the exact rewrites of
``export.int8_graph`` (``integer_pooling``): in float they cost INT8 more than they cost FP32. The
stem stays quantized: in float it cost a third of INT8's speed. The normalisation of the uint8
input (``/normalize/`` nodes) is excluded from quantization and runs in float32: the first
QuantizeLinear takes its result, calibrated on it as on any activation, so an INT8 file computes
what the same quantization of a float-input graph computes on host-normalised images.
"""

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxconverter_common import float16
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

from export import int8_graph, int8_tensorrt
from export.onnx_export import NORMALIZE_SCOPE, normalization_nodes
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.writeutil import atomic_path

_CPU = dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, extra_options={},
            keep_float=("attention-gates", "head"), integer_pooling=True)
INT8_FLAVOURS = {
    # reduce_range: 7-bit weights, so that AVX2's u8 x s8 multiply-add (vpmaddubsw, which saturates
    # at 16 bits) cannot overflow on CPUs without VNNI, as ONNX Runtime's quantization guide
    # advises; with VNNI (vpdpbusd accumulates in 32 bits) it only costs accuracy.
    "cpu-vnni": dict(_CPU, reduce_range=False),
    "cpu-avx2": dict(_CPU, reduce_range=True),
    "tensorrt": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=False,
                     op_types_to_quantize=int8_tensorrt.QUANTIZED_OPS, extra_options=int8_tensorrt.EXTRA_OPTIONS),
}
# Settings a flavour may leave out.
_DEFAULTS = dict(quant_format=QuantFormat.QDQ, per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                 keep_float=(), integer_pooling=False)
PARTS = ("attention", "attention-gates", "stem", "head")
# CBAM's gate computations: small tensors (a value per channel, or a 2-channel map).
_GATE_OPS = ("Conv", "Relu", "Add", "Sigmoid", "Concat")


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
    # The converter warns once per weight it clamps into FP16's range (tens of lines per fold for
    # values under 1e-7); the quality check after export measures what the clamping costs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        model = probs_only(onnx.load(str(src)))
        model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=normalization_nodes(model))
    onnx.checker.check_model(model)
    save_model(model, dst)
    return dst


def float_nodes(model, parts):
    """Names of the nodes of ``parts`` (PARTS): CBAM's nodes (named .../attention/... by the
    exporter after train.model's modules) or only its gates (``_GATE_OPS`` among them), the
    convolutions reading the input image, and the head: every node with no convolution after it
    (pooling, the linear layer, the sigmoid, an ensemble's mean)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part {sorted(unknown)[0]!r}; valid: {', '.join(PARTS)}")
    nodes = model.graph.node
    keep = set()
    if "attention" in parts:
        keep |= {n.name for n in nodes if "/attention/" in n.name}
    if "attention-gates" in parts:
        keep |= {n.name for n in nodes if "/attention/" in n.name and n.op_type in _GATE_OPS}
    if "stem" in parts:  # the convolutions reading the (normalised) image
        image = {INPUT_NAME} | {o for n in nodes if n.name.startswith(NORMALIZE_SCOPE) for o in n.output}
        keep |= {n.name for n in nodes if n.op_type == "Conv" and n.input[0] in image}
    if "head" in parts:
        feeds_conv = set()  # tensors with a convolution downstream (nodes are topologically sorted)
        for n in reversed(nodes):
            if n.op_type == "Conv" or feeds_conv & set(n.output):
                feeds_conv |= set(n.input)
            else:
                keep.add(n.name)
    return sorted(keep)


class _Batches(CalibrationDataReader):
    def __init__(self, images, batch_size=16):
        self.batches = iter([{INPUT_NAME: images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def int8_settings(flavour, **overrides):
    """The quantize_static settings of a flavour, with ``overrides`` (the levers docs/int8.md
    measures: keep_float, reduce_range, per_channel, quant_format, ...)."""
    if flavour not in INT8_FLAVOURS:
        raise ValueError(f"unknown INT8 flavour {flavour!r}; valid: {', '.join(INT8_FLAVOURS)}")
    return {**_DEFAULTS, **INT8_FLAVOURS[flavour], **overrides}


def to_int8(src, dst, calib_images, flavour="cpu-vnni", **overrides):
    """Static quantization calibrated on ``calib_images`` (the uint8 (N, 4, S, S) images the graph takes)."""
    settings = int8_settings(flavour, **overrides)
    if calib_images is None or len(calib_images) == 0:
        raise ValueError("INT8 calibration needs at least one image")
    keep_float, integer_pooling = settings.pop("keep_float"), settings.pop("integer_pooling")
    with tempfile.TemporaryDirectory() as tmp:
        single = Path(tmp) / "probs.onnx"
        onnx.save(probs_only(onnx.load(str(src))), str(single))
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(single), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        if integer_pooling:
            int8_graph.pooling_for_int8(model)
            onnx.save(model, str(prepared))
        out = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(out), _Batches(np.ascontiguousarray(calib_images)),
                        nodes_to_exclude=normalization_nodes(model) + float_nodes(model, keep_float), **settings)
        quantized = onnx.load(str(out))
        if integer_pooling:
            int8_graph.integer_max(quantized)
        onnx.checker.check_model(quantized)
        if flavour == "tensorrt":
            int8_tensorrt.check_tensorrt_qdq(quantized, dst)
        save_model(quantized, dst)
    return dst


@dataclass(frozen=True)
class Recipe:
    """How a reduced-precision variant is made from the FP32 files."""

    precision: str
    target: str            # any, cpu (ONNX Runtime's CPU kernels), tensorrt
    cpu: str = None        # the CPU class a CPU INT8 flavour is for (runtime.probe.cpu_class)
    flavour: str = None    # INT8_FLAVOURS key

    def convert(self, src, dst, calib_images):
        if self.precision == "fp16":
            return to_fp16(src, dst)
        return to_int8(src, dst, calib_images, self.flavour)

    def settings(self):
        """What model.json records about how the variant was made."""
        if self.precision == "fp16":
            return {"converter": "onnxconverter-common float16, uint8 input and float32 output kept, "
                                 "normalisation in float32"}
        s = int8_settings(self.flavour)
        return {"quantizer": "onnxruntime.quantization.quantize_static", "format": s["quant_format"].name,
                "activations": s["activation_type"].name, "weights": s["weight_type"].name,
                "per_channel": s["per_channel"], "reduce_range": s["reduce_range"],
                "calibration": s["calibrate_method"].name, "kept_in_float": list(s["keep_float"]),
                "integer_pooling": s["integer_pooling"], "normalisation": "float32, not quantized",
                **{k: v for k, v in s["extra_options"].items()}}


# Variant name (also the file suffix: fold0.<name>.onnx) -> recipe.
RECIPES = {
    "fp16": Recipe("fp16", "any"),
    "int8-cpu-vnni": Recipe("int8", "cpu", "vnni", "cpu-vnni"),
    "int8-cpu-avx2": Recipe("int8", "cpu", "avx2", "cpu-avx2"),
    "int8-trt": Recipe("int8", "tensorrt", None, "tensorrt"),
}
