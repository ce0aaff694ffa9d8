"""``python -m export triton``: a Triton Inference Server model repository from a deployment.

The config is built as Triton's own ``ModelConfig`` protobuf (tritonclient's model_config_pb2)
and written as text, then parsed back strictly (an unknown field or a wrong type is an error)
and compared with ``model.json``: input/output names, types and dims (the input is TYPE_UINT8 for
a version-3 model.json, whose graphs normalise the 8-bit image themselves), max batch within the
engine's optimization profile.

A TensorRT plan (``tensorrt_plan``) runs only on GPU instances (Triton refuses KIND_CPU for it),
only with the TensorRT release it was built with, on GPUs of the compute capability it was built
for: both are written at the top of config.pbtxt and returned to be shown. Triton's dynamic batcher
sends batches from 1 upwards, so an engine whose profile starts above 1 is refused.
"""

import shutil
from pathlib import Path

from google.protobuf import text_format

from runtime.classes import CLASS_NAMES, NUM_CLASSES
from runtime.errors import DataError
from runtime.model_spec import INPUT_NAME, PROBS, load_model_spec
from runtime.writeutil import atomic_write_text


def _mc():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def plan_note(engine):
    """One line on what a plan is tied to, from its model.json entry."""
    info = engine.info
    return (f"{engine.path.name}: TensorRT {info.get('tensorrt') or 'unknown'} plan for GPUs of compute capability "
            f"{info.get('compute_capability') or 'unknown'} (built on {info.get('gpu') or 'an unrecorded GPU'}); "
            "Triton must run that TensorRT release on such a GPU")


def _pick(spec, backend, precision):
    engine = spec.find("ensemble", precision, "tensorrt", fmt="engine")
    if backend in ("auto", "tensorrt") and engine is not None:
        profile = engine.info.get("profile", {})
        if profile.get("min_batch", 1) > 1:
            raise ValueError(f"{engine.path.name}: its optimization profile starts at batch {profile['min_batch']}, but "
                             "Triton's dynamic batcher sends batches from 1; rebuild it with "
                             "`python -m export tensorrt --min-batch 1`")
        return engine, "tensorrt_plan", "model.plan", profile.get("max_batch")
    if backend == "tensorrt":
        raise ValueError(f"model.json lists no {precision} TensorRT engine; build one with `python -m export tensorrt`")
    target = "cpu" if precision == "int8" else None
    onnx_file = spec.find("ensemble", precision, target, fmt="onnx")
    if onnx_file is None:
        raise ValueError(f"model.json lists no {precision} ensemble ONNX file ({', '.join(spec.choices())})")
    return onnx_file, "onnxruntime_onnx", "model.onnx", None


def _input_type(spec):
    """Triton's type of model.json's input: TYPE_UINT8 (version 3: the graph normalises), TYPE_FP32
    (version 2)."""
    return {"uint8": _mc().TYPE_UINT8, "float32": _mc().TYPE_FP32}[spec.input["dtype"]]


def build_config(spec, name, platform, max_batch, preferred, instances, kind):
    mc = _mc()
    size = spec.preprocess.size
    cfg = mc.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    cfg.input.add(name=INPUT_NAME, data_type=_input_type(spec), dims=[4, size, size])
    cfg.output.add(name=PROBS, data_type=mc.TYPE_FP32, dims=[NUM_CLASSES], label_filename="labels.txt")
    cfg.dynamic_batching.preferred_batch_size.extend([b for b in preferred if b <= max_batch])
    cfg.dynamic_batching.max_queue_delay_microseconds = 500
    group_kind = mc.ModelInstanceGroup.KIND_GPU if kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(count=instances, kind=group_kind)
    return cfg


def check_config(path, spec, profile_max=None):
    """Parse config.pbtxt strictly and compare it with model.json; returns the ModelConfig."""
    mc = _mc()
    try:
        cfg = text_format.Parse(Path(path).read_text(encoding="utf-8"), mc.ModelConfig())
    except text_format.ParseError as err:
        raise DataError(path, f"not a valid Triton model config ({err})") from None
    size = spec.preprocess.size
    problems = []
    if [i.name for i in cfg.input] != [INPUT_NAME] or list(cfg.input[0].dims) != [4, size, size]:
        problems.append(f"input must be {INPUT_NAME} [4, {size}, {size}]")
    if [o.name for o in cfg.output] != [PROBS] or list(cfg.output[0].dims) != [NUM_CLASSES]:
        problems.append(f"output must be {PROBS} [{NUM_CLASSES}]")
    if [i.data_type for i in [*cfg.input, *cfg.output]] != [_input_type(spec), mc.TYPE_FP32]:
        problems.append(f"input is {mc.DataType.Name(_input_type(spec))} (model.json's input.dtype), output TYPE_FP32")
    if cfg.max_batch_size < 1 or (profile_max and cfg.max_batch_size > profile_max):
        problems.append(f"max_batch_size {cfg.max_batch_size} outside 1..{profile_max or 'any'}")
    if any(b > cfg.max_batch_size for b in cfg.dynamic_batching.preferred_batch_size):
        problems.append("a preferred batch size exceeds max_batch_size")
    if cfg.platform == "tensorrt_plan" and any(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in cfg.instance_group):
        problems.append("a tensorrt_plan model runs on KIND_GPU instances only")
    if problems:
        raise DataError(path, "; ".join(problems))
    return cfg


def write_repository(deploy, out, name="hpa", backend="auto", precision="fp32", max_batch=64,
                     preferred=(8, 32), instances=1, kind="auto"):
    """Write OUT/NAME/{config.pbtxt, labels.txt, 1/model.*}; returns (folder, note): ``note`` says
    what a plan is tied to (None for ONNX)."""
    spec = load_model_spec(deploy)
    model_file, platform, filename, profile_max = _pick(spec, backend, precision)
    note = plan_note(model_file) if platform == "tensorrt_plan" else None
    if note and kind == "cpu":
        raise ValueError("a TensorRT plan runs on a GPU only: Triton refuses KIND_CPU for it (leave --kind auto or gpu)")
    if profile_max:
        max_batch = min(max_batch, profile_max)
    if kind == "auto":
        kind = "gpu" if note else "cpu"
    folder = Path(out) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file.verified(), folder / "1" / filename)
    atomic_write_text(folder / "labels.txt", "".join(f"{n}\n" for n in CLASS_NAMES))
    cfg = build_config(spec, name, platform, max_batch, preferred, instances, kind)
    header = f"# {note}\n" if note else ""
    atomic_write_text(folder / "config.pbtxt", header + text_format.MessageToString(cfg))
    check_config(folder / "config.pbtxt", spec, profile_max)
    return folder, note
