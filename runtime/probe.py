"""What this CPU is, and whether INT8 is faster than FP32 on it.

``auto`` takes an INT8 file on a CPU only when it pays here: INT8 convolutions are 2-3x FP32's on
CPUs with VNNI at wide layers, but slower at narrow ones and on CPUs without VNNI
(docs/int8.md). So before choosing, ``speedup`` times both files on this machine for about a
second and caches the ratio per pair of files (sha256), CPU (name and flags), ONNX Runtime
version and core count, in ``$HPA_TOOLKIT_CACHE`` (default ``~/.cache/hpa-toolkit``), so a
machine pays for the probe once per model.
"""

import logging
import os
import time
from pathlib import Path

import numpy as np

from runtime.errors import DataError
from runtime.jsonfile import read_json
from runtime.model_spec import INPUT_NAME
from runtime.writeutil import atomic_write_json

log = logging.getLogger(__name__)

# The SIMD features that decide INT8 speed (int8-ceiling prints them).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
# u8 x s8 dot products that cannot saturate: VNNI (AVX512-VNNI, AVX-VNNI) or AMX tiles.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
PROBE_SECONDS = 0.5   # timed runs of both files together, after one warm-up run of each
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


def cache_path(name):
    """``$HPA_TOOLKIT_CACHE/name`` (default ``$XDG_CACHE_HOME/hpa-toolkit`` or ``~/.cache/hpa-toolkit``)."""
    root = os.environ.get("HPA_TOOLKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpa-toolkit"
    return Path(root) / name


def cached_probe(name, key, measure, valid, what):
    """A speed probe's result, measured once per ``key`` and kept in the JSON file ``cache_path(name)``
    ({key: result}): the cached result when it is ``valid``, else ``measure()``, written back
    atomically. A cache file that cannot be read (missing, damaged, not ours) counts as empty; one
    that cannot be written is a warning naming ``what`` (the probe then runs again next time)."""
    path = cache_path(name)
    try:
        cache = read_json(path) if path.is_file() else {}
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, DataError):
        cache = {}
    if key in cache and valid(cache[key]):
        return cache[key]
    cache[key] = measure()
    try:
        atomic_write_json(path, cache)
    except OSError as err:
        log.warning("could not cache the %s in %s (%s); it runs again next time", what, path, err.strerror)
    return cache[key]


def interleaved(calls, seconds, block=1.0):
    """Per-call seconds of each callable, timed in turns of about ``block`` seconds until each has
    had ``seconds``: a change in the machine's load hits all of them alike. Turns, not single
    calls: after a call ONNX Runtime's thread pool spin-waits a while, and call-by-call
    alternation would time each session beside the other's spinning threads."""
    for call in calls:
        call()  # warm up
    times = [[] for _ in calls]
    spent = [0.0] * len(calls)
    while min(spent) < seconds or min(map(len, times)) < 5:
        for k, call in enumerate(calls):
            start, calls_this_turn = time.perf_counter(), 0
            while time.perf_counter() - start < block or calls_this_turn < 2:
                t0 = time.perf_counter()
                call()
                times[k].append(time.perf_counter() - t0)
                calls_this_turn += 1
            spent[k] += time.perf_counter() - start
    return times


def random_input(session, n, size, rng):
    """``n`` random images of the kind ``session``'s graph takes: uint8 images (model.json version
    3), or the normalised float32 tensor (version 2)."""
    if session.get_inputs()[0].type == "tensor(uint8)":
        return rng.integers(0, 256, (n, 4, size, size), dtype=np.uint8)
    return rng.standard_normal((n, 4, size, size), dtype=np.float32)


def measure(fp32_path, int8_path, size, seconds=PROBE_SECONDS):
    """INT8 images/s over FP32 images/s on this machine. The batch is the largest (up to 32, the
    runtime's default) whose FP32 call takes a tenth of the time given, so small models are timed
    at the batch they run at and large ones still get several calls."""
    from runtime.onnx_session import make_session

    fp32, int8 = make_session(fp32_path, "cpu"), make_session(int8_path, "cpu")
    rng = np.random.default_rng(0)
    one = {INPUT_NAME: random_input(fp32, 1, size, rng)}
    t1 = float(np.median(interleaved([lambda: fp32.run(None, one)], 0, block=0)[0]))
    feed = {INPUT_NAME: random_input(fp32, int(np.clip(seconds / 10 / max(t1, 1e-6), 1, 32)), size, rng)}
    times = interleaved([lambda: fp32.run(None, feed), lambda: int8.run(None, feed)], seconds / 2, block=seconds / 8)
    return float(np.median(times[0]) / np.median(times[1]))


def speedup(fp32_file, int8_file):
    """INT8/FP32 throughput of two listed files here (ModelFile), measured once per machine."""
    name, flags = cpu_info()
    import onnxruntime

    key = "|".join([fp32_file.sha256, int8_file.sha256, name, " ".join(flags), onnxruntime.__version__,
                    str(os.cpu_count())])

    def probe():
        t0 = time.perf_counter()
        ratio = measure(fp32_file.verified(), int8_file.verified(), fp32_file.size)
        log.info("INT8/FP32 probe: %.2fx in %.1fs; cached in %s", ratio, time.perf_counter() - t0, cache_path(CACHE_FILE))
        return ratio

    return float(cached_probe(CACHE_FILE, key, probe, _is_ratio, "INT8 probe"))


def _is_ratio(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")
