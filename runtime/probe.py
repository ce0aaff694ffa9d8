"""What this CPU is, and whether INT8 is faster than FP32 on it.

``auto`` takes an INT8 file on a CPU only when it pays here: INT8 convolutions are 2-3x FP32's on
CPUs with VNNI at wide layers, but slower at narrow ones and on CPUs without VNNI
(docs/int8.md). So before choosing, ``speedup`` times both files on this machine for about a
second and caches the ratio per pair of files (sha256), CPU (name and flags), ONNX Runtime
version and core count, in ``$HPA_TOOLKIT_CACHE`` (default ``~/.cache/hpa-toolkit``), so a
machine pays for the probe once per model.
"""

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from runtime.model_spec import INPUT_NAME
from runtime.writeutil import atomic_write_json

log = logging.getLogger(__name__)

# The SIMD features that decide INT8 speed (int8-ceiling prints them).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# u8 x s8 dot products that cannot saturate: VNNI (AVX512-VNNI, AVX-VNNI) or AMX tiles.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
PROBE_SECONDS = 0.5   # timed runs, after one warm-up run of each file
CACHE_FILE = "int8-probe.json"


def cpu_info():
    """(CPU model name, the SIMD_FLAGS it has) from /proc/cpuinfo; ("unknown", []) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", []
    name, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown":
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags.update(value.split())
    return name, [f for f in SIMD_FLAGS if f in flags]


def cpu_class(flags):
    """'vnni' when INT8 dot products cannot saturate here, else 'avx2' (the INT8 flavour with
    7-bit weights, ``reduce_range``, is the safe one there)."""
    return "vnni" if any(f in flags for f in VNNI_FLAGS) else "avx2"


def _cache_path():
    root = os.environ.get("HPA_TOOLKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpa-toolkit"
    return Path(root) / CACHE_FILE


def _time_pair(sessions, x, seconds):
    """Median seconds per call of each session, calls interleaved so that load changes hit both."""
    times = [[], []]
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times[1]) < 3:
        for k, session in enumerate(sessions):
            t0 = time.perf_counter()
            session.run(None, {INPUT_NAME: x})
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def measure(fp32_path, int8_path, size, seconds=PROBE_SECONDS):
    """INT8 images/s over FP32 images/s on this machine. The batch is the largest (up to 32, the
    runtime's default) whose FP32 call takes a tenth of the time given, so small models are timed
    at the batch they run at and large ones still get several calls."""
    from runtime.onnx_session import make_session

    sessions = [make_session(fp32_path, "cpu"), make_session(int8_path, "cpu")]
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 4, size, size), dtype=np.float32)
    t1 = _time_pair(sessions, one, 0)[0]
    batch = int(np.clip(seconds / 10 / max(t1, 1e-6), 1, 32))
    fp32, int8 = _time_pair(sessions, rng.standard_normal((batch, 4, size, size), dtype=np.float32), seconds)
    return fp32 / int8


def speedup(fp32_file, int8_file):
    """INT8/FP32 throughput of two listed files here (ModelFile), measured once per machine."""
    name, flags = cpu_info()
    import onnxruntime

    key = "|".join([fp32_file.sha256, int8_file.sha256, name, " ".join(flags), onnxruntime.__version__,
                    str(os.cpu_count())])
    path = _cache_path()
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        t0 = time.perf_counter()
        cache[key] = measure(fp32_file.verified(), int8_file.verified(), fp32_file.size)
        log.info("INT8/FP32 probe: %.2fx in %.1fs; cached in %s", cache[key], time.perf_counter() - t0, path)
        try:
            atomic_write_json(path, cache)
        except OSError as err:
            log.warning("could not cache the INT8 probe in %s (%s); it runs again next time", path, err.strerror)
    return cache[key]
