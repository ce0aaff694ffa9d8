"""The GPU as its driver describes it, read from the driver's own library (libcuda.so.1, which every
NVIDIA driver installs) through ctypes: no CUDA toolkit, cuda-python or torch needed. Device 0 is
the first device CUDA_VISIBLE_DEVICES leaves visible, the one TensorRT and ONNX Runtime use.

gpu-check reports it; the TensorRT engine builder records the compute capability a plan is tied
to; the driver's CUDA version tells which of the two matched install sets (docs/gpu.md) can run.
"""

import ctypes
import re
from dataclasses import asdict, dataclass
from pathlib import Path

# cuda.h: CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_CC_MAJOR, _CC_MINOR = 75, 76
# cuda.h's CUresult (the driver API's codes, not the runtime API's cudaError_t: 35 is only the latter's)
_ERRORS = {34: "libcuda.so.1 is the CUDA toolkit's stub, not the NVIDIA driver's library (CUDA_ERROR_STUB_LIBRARY)",
           100: "no CUDA device is visible (check CUDA_VISIBLE_DEVICES)",
           803: "the NVIDIA driver's libcuda.so.1 and its kernel module are different versions (reboot after a driver "
                "update, or reinstall the driver; CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)",
           999: "the NVIDIA driver reports an unknown error (is the kernel module loaded?)"}


class NoGpu(Exception):
    """No usable NVIDIA GPU; the message says why, in one line."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str      # e.g. "9.0"
    driver_cuda: str             # newest CUDA the driver runs, e.g. "12.8": CUDA 13 builds need 13.0
    driver: str | None           # kernel module version, e.g. "570.133.20"
    devices: int

    def to_dict(self):
        return asdict(self)

    @property
    def driver_cuda_major(self):
        return int(self.driver_cuda.split(".")[0])


def driver_version(text=None):
    """The NVIDIA kernel module version in /proc/driver/nvidia/version (or ``text``), or None."""
    if text is None:
        try:
            text = Path("/proc/driver/nvidia/version").read_text()
        except OSError:
            return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def gpu_info(library="libcuda.so.1"):
    """GpuInfo for device 0; raises NoGpu with the reason when there is none to use."""
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
        raise NoGpu(f"no NVIDIA driver library ({library} cannot be loaded)") from None
    version = ctypes.c_int()
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        raise NoGpu("the NVIDIA driver library does not report its CUDA version")
    status = cuda.cuInit(0)
    if status != 0:
        raise NoGpu(_ERRORS.get(status, f"cuInit failed with CUDA driver error {status}"))
    count, device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    calls = (cuda.cuDeviceGetCount(ctypes.byref(count)), cuda.cuDeviceGet(ctypes.byref(device), 0),
             cuda.cuDeviceGetName(name, len(name), device),
             cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device),
             cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device))
    failed = next((s for s in calls if s != 0), 0)
    if failed:
        raise NoGpu(_ERRORS.get(failed, f"the CUDA driver cannot describe device 0 (error {failed})"))
    return GpuInfo(name=name.value.decode(errors="replace"), compute_capability=f"{major.value}.{minor.value}",
                   driver_cuda=f"{version.value // 1000}.{version.value % 1000 // 10}", driver=driver_version(),
                   devices=count.value)
