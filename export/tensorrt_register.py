"""Add a built engine to the model.json that lists its ONNX source, so the runtime can find it,
with what the plan is tied to: the TensorRT release and the GPU compute capability it was built for
(a plan runs only with that release, on GPUs of that compute capability)."""

from pathlib import Path

from runtime.jsonfile import read_json
from runtime.model_spec import sha256_of
from runtime.writeutil import atomic_write_json


def register_engine(onnx_path, engine_path, info):
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    spec_path = onnx_path.parent / "model.json"
    if not spec_path.is_file() or engine_path.resolve().parent != onnx_path.resolve().parent:
        return None  # an engine outside a deployment folder is simply a file
    data = read_json(spec_path)
    source = next((f for f in data["files"] if f["path"] == onnx_path.name), None)
    if source is None:
        return None
    data["files"] = [f for f in data["files"] if f["path"] != engine_path.name]
    data["files"].append({
        "path": engine_path.name, "kind": source["kind"], "fold": source["fold"], "precision": source["precision"],
        "target": "tensorrt", "format": "engine", "variant": source["variant"], "outputs": ["probs"],
        "sha256": sha256_of(engine_path), "source": onnx_path.name,
        "bytes": engine_path.stat().st_size, "profile": {k: info[k] for k in ("min_batch", "opt_batch", "max_batch")},
        "tensorrt": info["tensorrt"], "compute_capability": info.get("compute_capability"), "gpu": info.get("gpu"),
        "tf32": info.get("tf32", False),
    })
    data["versions"]["tensorrt"] = info["tensorrt"]
    atomic_write_json(spec_path, data)
    return spec_path
