"""INT8 for TensorRT: the quantization settings of the ``tensorrt`` flavour and a check that a Q/DQ
graph follows TensorRT's rules before it is written.

TensorRT's rules for explicit quantization (onnx-tensorrt ``docs/operators.md``, TensorRT's
developer guide on Q/DQ networks):

- ``DequantizeLinear`` takes INT8 (or FP8/INT4) input only; an INT32 input, which onnxruntime's
  quantizer writes for a Conv bias unless ``QuantizeBias`` is off, stops the engine build at parse
  (NVIDIA/TensorRT issues #3360, #4542).
- Quantization is symmetric: every zero-point is 0 and of type INT8 (a ``QuantizeLinear`` without a
  zero-point produces UINT8, which TensorRT has no Q/DQ layers for).
- Activations are quantized per tensor; weights per tensor or per channel along the output-channel
  axis of the layer that consumes them (Conv: 0, ConvTranspose: 1, Gemm: 0 with transB else 1,
  MatMul: the last axis).
- Every node is a standard ONNX operator (TensorRT's parser has no ``com.microsoft`` operators).

Why onnxruntime.quantization and not NVIDIA ModelOpt: ModelOpt (``modelopt.onnx.quantization``,
``quantize_mode="int8"``) is itself built on onnxruntime's ``quantize_static``; the options below
are the TensorRT-specific ones it passes (its ``configure_ort``: QuantizeBias off, symmetric
activations, no output quantization, per-channel weight axis Conv 0 / ConvTranspose 1), applied to
the weighted layers only (TensorRT's first placement rule: quantize the inputs of Conv, Gemm and
MatMul). What ModelOpt adds is Q/DQ on residual-Add inputs found by graph analysis and an FP16
remainder; it pins onnx~=1.21, onnxruntime-gpu~=1.24 (the last CUDA 12 builds) and cupy-cuda12x,
which conflict with this project's onnx, CUDA 13 onnxruntime-gpu and torch. The FP16 remainder was
tried here (opset 19, FP16 scales): ONNX Runtime's CPU graph optimizer then mis-evaluates the
FP16 QuantizeLinear (demo fold 1: max |p - p_fp32| 0.93 with optimizations, 0.061 without), which
would make export's CPU parity and F1 of this flavour wrong, so the non-quantized layers stay FP32.
See docs/gpu.md.
"""

import onnx
from onnx import numpy_helper

from runtime.errors import DataError

# Quantized op types: TensorRT runs INT8 where a weighted layer's inputs are quantized.
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]

EXTRA_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,                            # no INT32 bias DequantizeLinear
    "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
}

_ALLOWED = {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT4}
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _type_name(data_type):
    return onnx.TensorProto.DataType.Name(data_type)


def _axis(node):
    return next((a.i for a in node.attribute if a.name == "axis"), 1)  # ONNX's default axis is 1


def _output_channel_axis(consumer, rank):
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in consumer.attribute) else 1
    if consumer.op_type == "MatMul":
        return rank - 1
    return None


def _weight(node, init, producers):
    """The weight initializer a Q/DQ node quantizes (directly, or DQ(Q(weight))), else None."""
    x = node.input[0]
    if x in init:
        return init[x]
    source = producers.get(x)
    if node.op_type == "DequantizeLinear" and source is not None and source.op_type == "QuantizeLinear":
        return init.get(source.input[0])
    return None


def _scale_problems(node, scale, weight, consumers):
    name = node.name or node.output[0]
    if scale.size > 1 and weight is None:
        return [f"{node.op_type} {name}: activations are quantized per tensor, got {scale.size} scales"]
    problems = [f"{node.op_type} {name}: scales must be positive"] if (scale <= 0).any() else []
    if scale.size > 1 and node.op_type == "DequantizeLinear":
        for consumer in consumers.get(node.output[0], []):
            want = _output_channel_axis(consumer, len(weight.dims))
            got = _axis(node) % len(weight.dims)
            if want is not None and got != want:
                problems.append(f"DequantizeLinear {name}: per-channel axis {got}, but {consumer.op_type} "
                                f"{consumer.name} needs the output-channel axis {want}")
    return problems


def _zero_point_problems(node, init):
    name = node.name or node.output[0]
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero_point is None:
        return ([f"QuantizeLinear {name}: no zero-point, so its output is UINT8; TensorRT needs INT8"]
                if node.op_type == "QuantizeLinear" else [])
    if zero_point not in init:
        return [f"{node.op_type} {name}: zero-point {zero_point} is not a constant"]
    zp = init[zero_point]
    if zp.data_type not in _ALLOWED:
        return [f"{node.op_type} {name}: zero-point type {_type_name(zp.data_type)}; TensorRT needs INT8"]
    if numpy_helper.to_array(zp).astype(float).any():
        return [f"{node.op_type} {name}: zero-point is not 0 (TensorRT quantizes symmetrically)"]
    return []


def qdq_problems(model):
    """Every way ``model`` breaks TensorRT's Q/DQ rules, one line each (empty: conformant)."""
    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems = [f"{n.op_type} {n.name}: operator domain {n.domain!r} is not standard ONNX"
                for n in graph.node if n.domain not in ("", "ai.onnx")]
    for node in (n for n in graph.node if n.op_type in _QDQ):
        name = node.name or node.output[0]
        x = node.input[0]
        if node.op_type == "DequantizeLinear" and x in init and init[x].data_type not in _ALLOWED:
            problems.append(f"DequantizeLinear {name}: input {x} is {_type_name(init[x].data_type)}; "
                            "TensorRT dequantizes INT8/FP8/INT4 only")
        problems += _zero_point_problems(node, init)
        if node.input[1] not in init:
            problems.append(f"{node.op_type} {name}: scale {node.input[1]} is not a constant")
            continue
        scale = numpy_helper.to_array(init[node.input[1]])
        problems += _scale_problems(node, scale, _weight(node, init, producers), consumers)
    return problems


def check_tensorrt_qdq(model, path):
    """Raise a one-line DataError naming ``path`` when ``model`` is not a Q/DQ graph TensorRT accepts."""
    problems = qdq_problems(model)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(path, "not a Q/DQ graph TensorRT accepts: " + "; ".join(problems[:3]) + more)
    return model
