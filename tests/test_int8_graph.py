"""export.int8_graph: the rewrites change which kernels ONNX Runtime runs, never a number."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

from export.int8_graph import integer_max, pooling_for_int8
from runtime.model_spec import INPUT_NAME, PROBS


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_cbam_pooling_rewritten_as_global_average_pools_gives_the_same_probabilities(tiny_deploy):
    deploy, _ = tiny_deploy
    original = onnx.load(str(deploy / "fold0.onnx"))
    model = shape_inference.infer_shapes(onnx.load(str(deploy / "fold0.onnx")))
    # 8 blocks: a mean over the pixels (channel attention) and one over the channels (spatial)
    assert pooling_for_int8(model) == 16
    onnx.checker.check_model(model)
    assert not [n for n in model.graph.node if n.op_type == "ReduceMean"]
    x = np.random.default_rng(0).integers(0, 256, (3, 4, 48, 48), dtype=np.uint8)
    want = _run(original, {INPUT_NAME: x})[list(o.name for o in original.graph.output).index(PROBS)]
    got = _run(model, {INPUT_NAME: x})[list(o.name for o in model.graph.output).index(PROBS)]
    np.testing.assert_allclose(got, want, atol=1e-6)


def _reduce(op, axes, keepdims=1, shape=(2, 5, 3, 4), dtype=TensorProto.FLOAT, copies=1):
    x = helper.make_tensor_value_info("x", dtype, ["n", *shape[1:]])
    outputs = [helper.make_tensor_value_info(f"y{k}", dtype, None) for k in range(copies)]
    # unnamed nodes, as quant_pre_process leaves them
    nodes = [helper.make_node(op, ["x"], [f"y{k}"], axes=axes, keepdims=keepdims) for k in range(copies)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outputs), opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=9)
    return shape_inference.infer_shapes(model)


@pytest.mark.parametrize("axes,rewritten", [([2, 3], 1), ([1], 1), ([-3], 1), ([1, 2], 0), ([3], 0)])
def test_only_means_over_the_pixels_or_the_channels_are_rewritten_and_they_stay_exact(axes, rewritten):
    model = _reduce("ReduceMean", axes, copies=2)
    x = np.random.default_rng(1).random((2, 5, 3, 4), dtype=np.float32)
    want = _run(model, {"x": x})
    assert pooling_for_int8(model) == 2 * rewritten
    onnx.checker.check_model(model)
    for got, expected in zip(_run(model, {"x": x}), want):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert pooling_for_int8(_reduce("ReduceMean", [1], keepdims=0)) == 0
    assert pooling_for_int8(_reduce("ReduceMax", [1])) == 0
    assert pooling_for_int8(_reduce("ReduceMean", [2, 3], dtype=TensorProto.INT32)) == 0  # pools take floats


def _qdq_max(scale, axis_scale=False, signed=False, axes_input=False):
    kind, ints = (TensorProto.INT8, np.int8) if signed else (TensorProto.UINT8, np.uint8)
    x = helper.make_tensor_value_info("x", kind, ["n", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 4, 4])
    s = np.full(3, scale, np.float32) if axis_scale else np.array(scale, np.float32)
    inits = [numpy_helper.from_array(s, "s"), numpy_helper.from_array(np.full(s.shape, 7, ints), "z")]
    if axes_input:  # opset 18: axes as an input, which integer_max does not carry over
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
        reduce = helper.make_node("ReduceMax", ["f", "axes"], ["y"], keepdims=1)
    else:
        reduce = helper.make_node("ReduceMax", ["f"], ["y"], axes=[1], keepdims=1)
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["f"], axis=1), reduce]
    opset = 18 if axes_input else 17
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


@pytest.mark.parametrize("signed", [False, True])
def test_max_of_dequantized_values_is_taken_on_the_integers_with_the_same_result(signed):
    model = _qdq_max(0.05, signed=signed)
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (2, 3, 4, 4)).astype(np.int8) if signed else rng.integers(0, 256, (2, 3, 4, 4), np.uint8)
    want = _run(model, {"x": x})[0]
    assert integer_max(model) == 1
    onnx.checker.check_model(model)
    maxes = [n for n in model.graph.node if n.op_type == "ReduceMax"]
    assert len(maxes) == 1 and maxes[0].input[0] == "x"
    np.testing.assert_array_equal(_run(model, {"x": x})[0], want)


def test_max_rewrite_leaves_what_it_cannot_keep_exact():
    assert integer_max(_qdq_max(0.05, axis_scale=True)) == 0  # per-channel scales
    assert integer_max(_qdq_max(-0.05)) == 0  # a decreasing dequantization turns the max into a min
    assert integer_max(_qdq_max(0.05, axes_input=True)) == 0  # axes as an input
