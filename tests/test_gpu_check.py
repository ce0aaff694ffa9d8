"""``python -m runtime gpu-check``: on a machine without a GPU it says what it skipped and exits 0;
a check that runs and fails makes it exit non-zero; the pieces it is built from do what they say."""

import json

import numpy as np
import pytest

import runtime.gpu_check as gc
from runtime.__main__ import main as runtime_main
from runtime.backends import make_backend
from runtime.gpu_info import GpuInfo, NoGpu, driver_version, gpu_info
from runtime.onnx_session import gpu_present


@pytest.mark.skipif(gpu_present(), reason="a GPU is present: gpu-check runs for real there")
def test_without_a_gpu_it_lists_what_it_skipped_and_exits_0(tmp_path, capsys):
    assert runtime_main(["gpu-check", "--out", str(tmp_path / "gc")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "gc" / "gpu_check.json").read_text())
    assert result["passed"] and result["environment"]["gpu"] is None
    rows = {r["check"]: r for r in result["rows"]}
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert all(r["reason"].startswith("no NVIDIA GPU") for r in rows.values())
    assert {"1-epoch fit on CUDA", "tensorrt int8", "onnxruntime-tensorrt fp16", "torch-cuda fp32"} <= set(rows)
    if not result["environment"]["tensorrt"]:
        assert "TensorRT is not installed" in rows["tensorrt fp16"]["reason"]
    assert "| tensorrt fp16 | skipped |" in out and "17 skipped" in out
    assert (tmp_path / "gc" / "gpu_check.md").read_text().count("| skipped |") == 17
    assert {"onnxruntime-tensorrt-rtx fp16", "onnxruntime-cuda fp16 cuda_graph"} <= set(rows)


def test_reference_row_measures_f1_and_speed_and_absent_backends_are_skipped(tiny_deploy, tiny_data):
    env = {"no_gpu": "no NVIDIA GPU (test)", "providers": ["CPUExecutionProvider"], "tensorrt": None}
    rows = gc.check_backends(tiny_deploy[0], tiny_data, env, seconds=0.05)
    reference, others = rows[0], rows[1:]
    assert reference.status == "ok" and reference.max_abs_diff == 0.0
    assert 0.0 <= reference.macro_f1 <= 1.0 and set(reference.images_per_s) == set(gc.BATCHES)
    assert [r.check for r in others] == [v[0] for v in gc.VARIANTS]
    assert all(r.status == "skipped" and "no NVIDIA GPU (test)" in r.reason for r in others)
    assert "this onnxruntime has no CUDA provider" in others[1].reason


def test_tensorrt_rtx_rows_say_why_they_cannot_run():
    """Skipped with one reason each: the plugin missing, or the GPU's compute capability not one
    TensorRT for RTX supports (named with the supported list), e.g. an H200's 9.0."""
    h200 = {"providers": ["CPUExecutionProvider"], "tensorrt": None, "tensorrt_rtx": None,
            "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0"}}
    reason = gc._absent("onnxruntime-tensorrt-rtx", h200)
    assert "TensorRT for RTX plugin is not installed" in reason
    assert ("NVIDIA H200 has compute capability 9.0; TensorRT for RTX (the onnxruntime-ep-nv-tensorrt-rtx plugin) "
            "supports 8.6, 8.9, 12.0 or newer") in reason
    turing = dict(h200, tensorrt_rtx="onnxruntime-ep-nv-tensorrt-rtx-cu13 0.5.0",
                  gpu={"name": "NVIDIA GeForce RTX 2080 Ti", "compute_capability": "7.5"})
    assert "compute capability 7.5" in gc._absent("onnxruntime-tensorrt-rtx", turing)  # the plugin 0.5.0 refuses it
    rtx4090 = dict(h200, tensorrt_rtx="onnxruntime-ep-nv-tensorrt-rtx-cu13 0.5.0",
                   gpu={"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"})
    assert gc._absent("onnxruntime-tensorrt-rtx", rtx4090) is None
    rtx5090 = dict(rtx4090, gpu={"name": "RTX 5090", "compute_capability": "12.0"})
    assert gc._absent("onnxruntime-tensorrt-rtx", rtx5090) is None


class Off:
    """An entered backend whose probabilities are off by ``delta``: a check that runs and fails."""

    def __init__(self, backend, delta):
        self.backend, self.delta, self.spec = backend, delta, backend.spec

    def infer(self, batch):
        return np.clip(self.backend.infer(batch) + self.delta, 0, 1)


def test_parity_beyond_the_bound_fails_the_check(tiny_deploy):
    x = np.random.default_rng(0).integers(0, 256, (6, 4, 48, 48), dtype=np.uint8)
    truth = np.zeros((6, 28), bool)
    with make_backend(tiny_deploy[1], "onnxruntime", precision="fp32", device="cpu") as cpu:
        reference = cpu.infer(x)
        row = gc.measure(gc.Row("tensorrt fp32"), Off(cpu, 0.01), x, reference, truth, np.full(28, 0.5), 0.02)
    failed = gc._judge(row, "fp32")
    assert failed.status == "failed" and "max |p - p_cpu_fp32| = 1.00e-02 > 0.0001" in failed.reason
    row.status, row.reason = "ok", ""
    assert gc._judge(row, "int8").status == "ok"  # a mean difference of 0.01 is within INT8's 0.05


def test_a_failing_step_reports_its_own_error_line_and_keeps_its_log(tmp_path):
    row = gc._step("score a missing file", ["runtime", "score", "--submission", tmp_path / "none.csv",
                                            "--labels", tmp_path / "none.csv"], tmp_path)
    assert row.status == "failed" and row.reason.startswith("exit 2: error: ") and "none.csv" in row.reason
    log = next(tmp_path.glob("*score-a-missing-file.log"))
    assert "python -m runtime score" in log.read_text()


def test_a_failed_check_makes_the_command_exit_1(tmp_path, monkeypatch):
    env = {"python": "3", "machine": "x86_64", "onnxruntime": "onnxruntime-gpu", "providers": [], "tensorrt": None,
           "polygraphy": None, "torch": None, "notes": [],
           "gpu": {"name": "GPU", "compute_capability": "9.0", "driver": "580.1", "driver_cuda": "13.0"}}
    monkeypatch.setattr(gc, "environment", lambda: env)
    monkeypatch.setattr(gc, "prepare", lambda out, env, logs: ([gc.Row("1-epoch fit on CUDA", "failed", "exit 1: boom")],
                                                               None))
    assert runtime_main(["gpu-check", "--out", str(tmp_path)]) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not result["passed"] and result["rows"][0]["reason"] == "exit 1: boom"


def test_a_driver_too_old_for_the_installed_cuda_builds_is_named(monkeypatch):
    old = GpuInfo("NVIDIA A10", "8.6", "12.8", "570.133.20", 1)
    monkeypatch.setattr("runtime.gpu_info.gpu_info", lambda: old)
    monkeypatch.setattr("runtime.onnx_session.gpu_present", lambda: True)
    monkeypatch.setattr("runtime.onnx_session.built_for_cuda", lambda: "13.0")
    env = gc.environment()
    assert env["gpu"]["compute_capability"] == "8.6" and "no_gpu" not in env
    note = next(n for n in env["notes"] if "onnxruntime-gpu" in n)
    assert "built for CUDA 13.0" in note and "CUDA 12 set (requirements-tensorrt-cu12.txt)" in note


class FakeLibcuda:
    """libcuda.so.1's entry points as ctypes calls them: out-parameters through byref, CUresult back."""

    def __init__(self, init_status):
        self.init_status = init_status

    def cuDriverGetVersion(self, version):
        version._obj.value = 12080
        return 0

    def cuInit(self, flags):
        return self.init_status


@pytest.mark.parametrize("status, says", [(803, "libcuda.so.1 and its kernel module are different versions"),
                                          (34, "stub"), (100, "no CUDA device is visible"),
                                          (46, "CUDA driver error 46")])
def test_a_driver_that_cannot_start_cuda_says_why_by_the_driver_apis_codes(monkeypatch, status, says):
    monkeypatch.setattr("runtime.gpu_info.ctypes.CDLL", lambda name: FakeLibcuda(status))
    with pytest.raises(NoGpu, match=says):
        gpu_info()


def test_two_cudnn_wheels_sharing_one_folder_are_named(monkeypatch):
    installed = {"nvidia-cudnn-cu12": "9.28.0.42", "nvidia-cudnn-cu13": "9.24.0.43"}

    def version(*dists):
        return next((f"{d} {installed[d]}" for d in dists if d in installed), None)

    monkeypatch.setattr(gc, "_version", version)
    monkeypatch.setattr("runtime.onnx_session.gpu_present", lambda: False)
    notes = gc.environment()["notes"]
    assert any("share nvidia/cudnn/lib" in n and "requirements-tensorrt-cu12.txt" in n for n in notes)
    del installed["nvidia-cudnn-cu13"]
    assert gc.environment()["notes"] == []


def test_driver_facts():
    assert driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 2023") == "535.129.03"
    assert driver_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build") == "580.65.06"
    assert driver_version("nothing") is None
    with pytest.raises(NoGpu, match="libcuda-not-here.so cannot be loaded"):
        gpu_info("libcuda-not-here.so")
    if not gpu_present():
        with pytest.raises(NoGpu):
            gpu_info()


class WorkingLibcuda(FakeLibcuda):
    """A driver with one H100: every call libcuda.so.1 answers, as ctypes passes it (out-parameters
    through byref, the name buffer and the device handle by value)."""

    def __init__(self, fail=None):
        super().__init__(0)
        self.fail = fail or {}

    def cuDeviceGetCount(self, count):
        count._obj.value = 2
        return self.fail.get("count", 0)

    def cuDeviceGet(self, device, ordinal):
        assert ordinal == 0
        device._obj.value = 0
        return 0

    def cuDeviceGetName(self, name, length, device):
        assert length == len(name) and device.value == 0
        name.value = b"NVIDIA H100 80GB HBM3"
        return 0

    def cuDeviceGetAttribute(self, value, attribute, device):
        value._obj.value = {75: 9, 76: 0}[attribute]  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
        return self.fail.get("attribute", 0)


def test_gpu_info_reads_the_device_from_the_driver_and_gpu_check_describes_it(monkeypatch, capsys):
    """What gpu-check prints on a GPU host: the GPU's name, compute capability, driver and CUDA
    version, read from libcuda.so.1 and /proc/driver/nvidia/version."""
    monkeypatch.setattr("runtime.gpu_info.ctypes.CDLL", lambda name: WorkingLibcuda())
    monkeypatch.setattr("runtime.gpu_info.driver_version", lambda text=None: "570.133.20")
    info = gpu_info()
    assert info == GpuInfo("NVIDIA H100 80GB HBM3", "9.0", "12.8", "570.133.20", 2) and info.driver_cuda_major == 12
    monkeypatch.setattr("runtime.onnx_session.gpu_present", lambda: True)
    env = gc.environment()
    assert "no_gpu" not in env and env["gpu"] == info.to_dict()
    assert gc._describe(env).splitlines()[0] == ("GPU: NVIDIA H100 80GB HBM3 (compute capability 9.0, driver "
                                                  "570.133.20, CUDA 12.8)")
    monkeypatch.setattr("runtime.gpu_info.ctypes.CDLL", lambda name: WorkingLibcuda({"attribute": 101}))
    with pytest.raises(NoGpu, match=r"^the CUDA driver cannot describe device 0 \(error 101\)$"):
        gpu_info()
    env = gc.environment()
    assert env["no_gpu"] == "an NVIDIA device node exists but the CUDA driver cannot describe device 0 (error 101)"
    assert gc._absent("torch", env).startswith("an NVIDIA device node exists but")


def test_on_a_gpu_the_torch_row_runs_the_cuda_backend_and_is_held_to_the_tf32_bound(tiny_deploy, tiny_data,
                                                                                    monkeypatch):
    """check_backends on a GPU host (a fake CUDA, tests.fake_cuda: the torch backend's CUDA branch
    runs on the CPU): the torch-cuda row is measured, judged against its bound and passes; the rows
    whose provider is missing are skipped with the reason."""
    pytest.importorskip("torch")
    from tests.fake_cuda import fake_cuda

    fake = fake_cuda(monkeypatch)
    env = {"providers": ["CPUExecutionProvider"], "tensorrt": None, "tensorrt_rtx": None,
           "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}}
    rows = {r.check: r for r in gc.check_backends(tiny_deploy[0], tiny_data, env, seconds=0.05)}
    torch_row = rows["torch-cuda fp32"]
    assert torch_row.status == "ok" and torch_row.limit == "max <= 0.005", torch_row.reason
    assert torch_row.max_abs_diff < 1e-4 and set(torch_row.images_per_s) == set(gc.BATCHES)
    assert fake.pinned  # it ran the CUDA branch (the pinned staging buffer)
    assert rows["onnxruntime-cuda fp32"].status == "skipped"
    assert "no TensorRT provider" in rows["onnxruntime-tensorrt fp32"].reason
