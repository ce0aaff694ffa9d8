"""Exact graph rewrites that let ONNX Runtime keep CBAM's pooling and products in 8 bits on a CPU.

CBAM pools every feature map four ways (mean and max over the pixels, mean and max over the
channels) and multiplies it twice. In float, each of those is a pass over a dequantized copy of
the map, with layout transposes around it; that made CBAM cost INT8 more than it cost FP32 (width
64, 256 px: 35 % of INT8's time, 13 % of FP32's). Written as the operators ONNX Runtime has 8-bit
NHWC kernels for, the passes read bytes instead:

- ``pooling_for_int8`` (before quantization): a ReduceMean over the pixels becomes a
  GlobalAveragePool, and a ReduceMean over the channels becomes the same pool over a
  [N, H*W, C, 1] view of the channels-last map (Transpose + Reshape, which ONNX Runtime folds
  into its own NHWC layout). The quantizer then wraps them in Q/DQ and ONNX Runtime fuses them
  into QLinearGlobalAveragePool.
- ``integer_max`` (after quantization): a ReduceMax of dequantized values becomes a ReduceMax of
  the integers followed by the dequantization. Dequantization is increasing (scale > 0), so the
  two orders give the same values.

Both compute the same function as the nodes they replace (float rounding aside: a pool sums in
another order, about 1e-7 on the probabilities; tests/test_int8_graph.py checks the rewritten FP32
graph against the original). docs/int8.md has the measurements.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _axes(node, constants):
    """A Reduce node's axes (attribute before opset 18, input after), or None when not constant."""
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(v) for v in constants[node.input[1]]]
    return None


def _keepdims(node):
    return next((a.i for a in node.attribute if a.name == "keepdims"), 1) == 1


def _attributes(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _small_constants(model, dtype):
    """Initializer name -> array for the initializers of ``dtype`` with at most 8 values (axes,
    scales): the weights are never converted."""
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == dtype and int(np.prod(i.dims)) <= 8}


def _static_shape(model):
    """Tensor name -> shape for 4-D float tensors whose C, H, W are known (batch may be dynamic)."""
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if (v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and len(dims) == 4
                and all(d.HasField("dim_value") for d in dims[1:])):
            shapes[v.name] = [d.dim_value for d in dims[1:]]
    return shapes


def _mean_over_channels(node, c, h, w):
    """ReduceMean(axis 1, keepdims) of an N x C x H x W tensor as a pool over a [N, H*W, C, 1] view.
    New names derive from the output's (unique in a graph; node names may be empty)."""
    x, y = node.input[0], node.output[0]
    shapes = [numpy_helper.from_array(np.array(s, np.int64), f"{y}/shape{k}")
              for k, s in enumerate(([0, h * w, c, 1], [0, 1, h, w]))]
    nodes = [helper.make_node("Transpose", [x], [f"{y}/nhwc"], name=f"{y}/nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", [f"{y}/nhwc", shapes[0].name], [f"{y}/view"], name=f"{y}/view"),
             helper.make_node("GlobalAveragePool", [f"{y}/view"], [f"{y}/pool"], name=f"{y}/pool"),
             helper.make_node("Reshape", [f"{y}/pool", shapes[1].name], [y], name=f"{y}/back")]
    return nodes, shapes


def pooling_for_int8(model):
    """``model`` (shapes inferred, as quant_pre_process leaves it) with its 4-D ReduceMeans over the
    pixels or over the channels written as GlobalAveragePools; returns how many were rewritten."""
    constants = _small_constants(model, onnx.TensorProto.INT64)
    shapes = _static_shape(model)
    nodes, count = [], 0
    for node in model.graph.node:
        axes = _axes(node, constants) if node.op_type == "ReduceMean" else None
        chw = shapes.get(node.input[0]) if node.input else None
        if axes is None or chw is None or not _keepdims(node):
            nodes.append(node)
            continue
        axes = sorted(a % 4 for a in axes)
        if axes == [2, 3]:
            nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
        elif axes == [1]:
            new, shape_constants = _mean_over_channels(node, *chw)
            nodes += new
            model.graph.initializer.extend(shape_constants)
        else:
            nodes.append(node)
            continue
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def integer_max(model):
    """``model`` (quantized, QDQ) with every ReduceMax that reads a DequantizeLinear output taking
    the max of the integers instead, then dequantizing; returns how many were rewritten."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    # per-tensor positive scales only: a per-channel dequantization does not survive a max over
    # channels, and only an increasing one commutes with the max (the quantizer's scales are > 0)
    scalars = {name for name, v in _small_constants(model, onnx.TensorProto.FLOAT).items()
               if v.size == 1 and float(v.flat[0]) > 0}
    nodes, count = [], 0
    for node in model.graph.node:
        dq = made_by.get(node.input[0]) if node.op_type == "ReduceMax" else None
        if dq is None or dq.op_type != "DequantizeLinear" or len(node.input) > 1 or dq.input[1] not in scalars:
            nodes.append(node)
            continue
        integers = f"{node.output[0]}/integers"
        nodes += [helper.make_node("ReduceMax", [dq.input[0]], [integers], name=integers, **_attributes(node)),
                  helper.make_node("DequantizeLinear", [integers, *dq.input[1:]], list(node.output),
                                   name=f"{node.output[0]}/dequantize", **_attributes(dq))]
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count
