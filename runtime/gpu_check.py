"""``python -m runtime gpu-check --out DIR``: proves the GPU path of this machine in a few minutes.

Steps: a tiny synthetic set, a 1-epoch fit on CUDA, export to FP32, FP16 and the TensorRT INT8
flavour, and TensorRT engines in those three precisions when TensorRT is installed. Then every
backend present (PyTorch CUDA, ONNX Runtime CUDA, ONNX Runtime TensorRT, TensorRT engines) runs the
held-out images (ONNX Runtime CUDA also with CUDA graphs, and TensorRT for RTX where its plugin is
installed and the GPU's compute capability is one it supports): parity against ONNX Runtime on the
CPU in FP32 on the same inputs, macro-F1 (the
submission rule, single-view thresholds) and images/s at batch 1, 32 and 256. The results go to
DIR/gpu_check.json and DIR/gpu_check.md, and the table is printed.

Training and export run as subprocesses (``python -m train``, ``python -m export``), the command
lines a user runs: runtime never imports train or export (a static contract), a failing step shows
its own one-line error (its full output in DIR/logs/), and a crash in one (a CUDA fault) does not
take the check down. Inference runs in this process through the runtime backends, the code
``runtime infer`` runs.

Exit status 0 when every check that ran passed, whatever was skipped (no GPU, no TensorRT, no CUDA
provider: each listed with its reason); 1 when a check ran and failed.
"""

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.writeutil import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]   # the folder holding runtime/, train/ and export/
BATCHES = (1, 32, 256)
# Parity with ONNX Runtime on the CPU in FP32: (statistic, bound). "fp32" is export's own FP32
# bound, for backends that compute in full FP32 (TF32 off); "tf32" for those that let Ampere+
# convolutions round inputs to TF32 (PyTorch's default for cuDNN, ONNX Runtime's TensorRT provider).
TOLERANCES = {"fp32": ("max", 1e-4), "tf32": ("max", 5e-3), "fp16": ("max", 1e-2), "int8": ("mean", 0.05)}
# (check, backend, precision, tolerance)
VARIANTS = (
    ("torch-cuda fp32", "torch", "fp32", "tf32"),
    ("onnxruntime-cuda fp32", "onnxruntime-cuda", "fp32", "fp32"),
    ("onnxruntime-cuda fp16", "onnxruntime-cuda", "fp16", "fp16"),
    ("onnxruntime-cuda fp16 cuda_graph", "onnxruntime-cuda", "fp16", "fp16"),
    ("onnxruntime-tensorrt fp32", "onnxruntime-tensorrt", "fp32", "tf32"),
    ("onnxruntime-tensorrt fp16", "onnxruntime-tensorrt", "fp16", "fp16"),
    ("onnxruntime-tensorrt int8", "onnxruntime-tensorrt", "int8", "int8"),
    # TensorRT for RTX's FP32 may take TF32 kernels (it has no switch for them).
    ("onnxruntime-tensorrt-rtx fp32", "onnxruntime-tensorrt-rtx", "fp32", "tf32"),
    ("onnxruntime-tensorrt-rtx fp16", "onnxruntime-tensorrt-rtx", "fp16", "fp16"),
    ("tensorrt fp32", "tensorrt", "fp32", "fp32"),
    ("tensorrt fp16", "tensorrt", "fp16", "fp16"),
    ("tensorrt int8", "tensorrt", "int8", "int8"),
)
# Backend options of a check beyond its backend's defaults.
CHECK_OPTIONS = {"onnxruntime-cuda fp16 cuda_graph": {"cuda_graph": "1"}}
ENGINES = (("fp32", "ensemble.onnx"), ("fp16", "ensemble.fp16.onnx"), ("int8", "ensemble.int8-trt.onnx"))


@dataclass
class Row:
    check: str
    status: str = "ok"               # ok | failed | skipped
    reason: str = ""
    seconds: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    limit: str = ""
    macro_f1: float | None = None
    images_per_s: dict = field(default_factory=dict)


def _version(*dists):
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment():
    """What this machine offers, with the GPU as its driver reports it and notes on mismatches."""
    from runtime.gpu_info import NoGpu, gpu_info
    from runtime.onnx_session import available_providers, built_for_cuda, gpu_present

    env = {"python": platform.python_version(), "machine": platform.machine(),
           "onnxruntime": f"{_version('onnxruntime-gpu', 'onnxruntime')} (CUDA {built_for_cuda() or 'none'})",
           "providers": available_providers(), "tensorrt": _version("tensorrt-cu13", "tensorrt-cu12", "tensorrt"),
           "polygraphy": _version("polygraphy"), "torch": _version("torch"),
           "tensorrt_rtx": _version("onnxruntime-ep-nv-tensorrt-rtx-cu13", "onnxruntime-ep-nv-tensorrt-rtx-cu12"),
           "gpu": None, "notes": []}
    if _version("nvidia-cudnn-cu12") and _version("nvidia-cudnn-cu13"):
        env["notes"].append("nvidia-cudnn-cu12 and nvidia-cudnn-cu13 are both installed and share nvidia/cudnn/lib, "
                            "so one overwrote the other's cuDNN: install the CUDA 12 set with PyTorch's CUDA 12 "
                            "wheels, as requirements-tensorrt-cu12.txt says")
    if not gpu_present():
        env["no_gpu"] = "no NVIDIA GPU (no /dev/nvidia* device)"
        return env
    try:
        env["gpu"] = gpu_info().to_dict()
    except NoGpu as err:
        env["no_gpu"] = f"an NVIDIA device node exists but {err}"
        return env
    driver_cuda = int(env["gpu"]["driver_cuda"].split(".")[0])
    wanted = {"onnxruntime-gpu": built_for_cuda(), "tensorrt": "13" if "cu13" in (env["tensorrt"] or "") else None}
    for name, cuda in wanted.items():
        if cuda and int(cuda.split(".")[0]) > driver_cuda:
            env["notes"].append(f"{name} is built for CUDA {cuda} but the driver ({env['gpu']['driver']}) runs CUDA "
                                f"{env['gpu']['driver_cuda']} at most: install the CUDA 12 set "
                                "(requirements-tensorrt-cu12.txt)")
    return env


def _absent(backend, env):
    """Why ``backend`` cannot be checked here (no GPU, not installed), or None."""
    reasons = [env["no_gpu"]] if env.get("no_gpu") else []
    providers = env["providers"]
    if backend == "torch" and importlib.util.find_spec("torch") is None:
        reasons.append("PyTorch is not installed")
    if backend == "onnxruntime-cuda" and "CUDAExecutionProvider" not in providers:
        reasons.append("this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    if backend == "onnxruntime-tensorrt" and "TensorrtExecutionProvider" not in providers:
        reasons.append("this onnxruntime has no TensorRT provider (install onnxruntime-gpu)")
    if backend in ("tensorrt", "onnxruntime-tensorrt") and not env["tensorrt"]:
        reasons.append("TensorRT is not installed (requirements-tensorrt.txt)")
    if backend == "onnxruntime-tensorrt-rtx":
        from runtime.backends.onnxruntime_rtx import unsupported_reason

        if not env.get("tensorrt_rtx"):
            reasons.append("the TensorRT for RTX plugin is not installed (requirements-tensorrt-rtx-cu13.txt)")
        if env.get("gpu"):
            unsupported = unsupported_reason(env["gpu"]["name"], env["gpu"]["compute_capability"])
            reasons += [unsupported.removeprefix("onnxruntime-tensorrt-rtx: ")] if unsupported else []
    return "; ".join(reasons) or None


def _step(name, args, logs, timeout=600):
    """Run ``python -m ARGS`` from the project root; a Row with the command's last line on failure."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Row(name, "failed", f"timed out after {timeout} s", time.perf_counter() - t0)
    log = logs / f"{len(list(logs.glob('*.log'))):02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.log"
    atomic_write_text(log, f"$ python -m {' '.join(map(str, args))}\n{proc.stdout}{proc.stderr}")
    row = Row(name, seconds=time.perf_counter() - t0)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else "no output")
        row.status, row.reason = "failed", f"exit {proc.returncode}: {last} ({log.name})"
    return row


def prepare(out, env, logs):
    """The synthetic set, the fit, the export and the engines; returns (rows, deploy folder or None)."""
    data, run, deploy = out / "data", out / "run", out / "deploy"
    rows = [_step("synthetic set", ["train", "synth", "--out", data, "--images", 128, "--size", 64, "--seed", 0,
                                    "--min-per-class", 2, "--test-images", 64], logs)]
    fit = ["train", "fit", "--data", data, "--out", run, "--folds", 2, "--width", 8, "--size", 64, "--epochs", 1,
           "--batch-size", 16, "--tta", 1, "--seed", 0]
    rows.append(_step("1-epoch fit on CUDA", [*fit, "--device", "cuda"], logs))
    if rows[-1].status == "failed":  # the deployment backends can still be checked on a CPU-trained model
        shutil.rmtree(run, ignore_errors=True)
        rows.append(_step("1-epoch fit on the CPU (fallback)", [*fit, "--device", "cpu"], logs))
    rows.append(_step("export fp32, fp16, int8", ["export", "onnx", "--run", run, "--out", deploy, "--precision",
                                                  "fp32,fp16,int8", "--int8-targets", "tensorrt",
                                                  "--calib-images", 32, "--eval-images", 128], logs))
    if rows[-1].status == "failed":
        return rows, None
    for precision, source in ENGINES:
        name = f"TensorRT {precision} engine build"
        reason = _absent("tensorrt", env)
        rows.append(Row(name, "skipped", reason) if reason else _step(name, [
            "export", "tensorrt", "--onnx", deploy / source, "--out", deploy / f"ensemble.{precision}.engine",
            "--opt-batch", 32, "--max-batch", max(BATCHES), "--timing-cache", out / "timing.cache"], logs))
    return rows, deploy


def measure(row, backend, x, reference, truth, thresholds, seconds):
    """Fill ``row`` with parity, macro-F1 and throughput of an entered backend."""
    from runtime.bench import model_only
    from runtime.infer import predicted_classes
    from runtime.labels import multi_hot
    from runtime.metrics import f1_per_class

    probs = backend.infer(x)
    diff = np.abs(probs - reference)
    row.max_abs_diff, row.mean_abs_diff = float(diff.max()), float(diff.mean())
    predicted = multi_hot([predicted_classes(p, thresholds) for p in probs])
    row.macro_f1 = float(f1_per_class(truth, predicted).mean())
    rng = np.random.default_rng(0)
    row.images_per_s = {b: round(model_only([backend], b, seconds, rng)[0]["images_per_s"], 1) for b in BATCHES}
    return row


def _judge(row, tolerance):
    statistic, bound = TOLERANCES[tolerance]
    value = row.max_abs_diff if statistic == "max" else row.mean_abs_diff
    row.limit = f"{statistic} <= {bound:g}"
    if value > bound:
        row.status, row.reason = "failed", f"{statistic} |p - p_cpu_fp32| = {value:.2e} > {bound:g}"
    return row


def check_backends(deploy, data, env, seconds):
    """The reference row, then one row per VARIANTS entry."""
    from runtime.backends import BackendUnavailable, make_backend
    from runtime.labels import multi_hot, read_labels
    from runtime.model_spec import load_model_spec
    from runtime.preprocess import image_chw
    from runtime.reader import ImageFolder

    spec = load_model_spec(deploy)
    folder = ImageFolder(data / "test")
    ids = folder.ids()
    x = np.stack([image_chw(folder.read(i), spec.preprocess) for i in ids])
    labels = read_labels(data / "test_labels.csv")
    truth = multi_hot([labels[i] for i in ids])
    thresholds = np.asarray(spec.thresholds_for(1)[0], np.float32)
    with make_backend(spec, "onnxruntime", precision="fp32", device="cpu") as cpu:
        reference = cpu.infer(x)
        rows = [measure(Row("reference: onnxruntime-cpu fp32"), cpu, x, reference, truth, thresholds, seconds)]
    for name, backend, precision, tolerance in VARIANTS:
        reason = _absent(backend, env)
        if reason:
            rows.append(Row(name, "skipped", reason))
            continue
        cache = {"onnxruntime-tensorrt": "ort-tensorrt-cache", "onnxruntime-tensorrt-rtx": "rtx-cache"}.get(backend)
        options = {"engine_cache": deploy.parent / cache, "max_batch": max(BATCHES)} if cache else {}
        options.update(CHECK_OPTIONS.get(name, {}))
        t0 = time.perf_counter()
        try:
            with make_backend(spec, backend, precision=precision, device="cuda" if backend == "torch" else None,
                              **options) as b:
                row = _judge(measure(Row(name), b, x, reference, truth, thresholds, seconds), tolerance)
        except Exception as err:  # noqa: BLE001 - one failing backend must not hide the others' results
            kind = "" if isinstance(err, BackendUnavailable) else f"{type(err).__name__}: "
            row = Row(name, "failed", kind + (str(err).strip().splitlines() or [""])[0][:300])
        row.seconds = time.perf_counter() - t0
        rows.append(row)
    return rows


def format_table(rows):
    """The rows as a Markdown table (what gpu_check.md holds and the command prints)."""
    head = ["check", "status", "max abs diff", "mean abs diff", "limit", "macro-F1",
            *(f"img/s @{b}" for b in BATCHES), "s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.check, r.status, f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "",
                 f"{r.mean_abs_diff:.1e}" if r.mean_abs_diff is not None else "", r.limit,
                 f"{r.macro_f1:.3f}" if r.macro_f1 is not None else "",
                 *(f"{r.images_per_s[b]:.0f}" if b in r.images_per_s else "" for b in BATCHES),
                 f"{r.seconds:.0f}" if r.seconds is not None else "", r.reason.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(env):
    gpu = env["gpu"]
    where = (f"{gpu['name']} (compute capability {gpu['compute_capability']}, driver {gpu['driver']}, "
             f"CUDA {gpu['driver_cuda']})" if gpu else env["no_gpu"])
    lines = [f"GPU: {where}", f"onnxruntime: {env['onnxruntime']}; providers: {', '.join(env['providers'])}",
             f"tensorrt: {env['tensorrt'] or 'not installed'}; polygraphy: {env['polygraphy'] or 'not installed'}; "
             f"torch: {env['torch'] or 'not installed'}; "
             f"TensorRT for RTX: {env.get('tensorrt_rtx') or 'not installed'}"]
    return "\n".join(lines + [f"note: {n}" for n in env["notes"]])


def gpu_check(out, seconds=1.0, report=print):
    """Run every check; writes OUT/gpu_check.json and OUT/gpu_check.md; returns the exit status."""
    t0 = time.perf_counter()
    out = Path(out)
    for stale in ("data", "run", "deploy", "logs", "ort-tensorrt-cache", "rtx-cache"):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    env = environment()
    report(_describe(env))
    if env.get("no_gpu"):
        rows = [Row(name, "skipped", env["no_gpu"]) for name in ("1-epoch fit on CUDA", "export fp32, fp16, int8")]
        rows += [Row(f"TensorRT {p} engine build", "skipped", _absent("tensorrt", env)) for p, _ in ENGINES]
        rows += [Row(name, "skipped", _absent(backend, env)) for name, backend, _, _ in VARIANTS]
    else:
        rows, deploy = prepare(out, env, out / "logs")
        if deploy is not None:
            rows += check_backends(deploy, out / "data", env, seconds)
    failed = [r.check for r in rows if r.status == "failed"]
    table = format_table(rows)
    total = time.perf_counter() - t0
    atomic_write_json(out / "gpu_check.json", {"environment": env, "seconds": total, "passed": not failed,
                                               "rows": [asdict(r) for r in rows]})
    atomic_write_text(out / "gpu_check.md", f"{_describe(env)}\n\n{table}\n")
    skipped = sum(r.status == "skipped" for r in rows)
    report(f"{table}\n\n{len(rows) - skipped - len(failed)} passed, {len(failed)} failed, {skipped} skipped "
           f"in {total:.0f} s; wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if failed else 0
