"""ONNX Runtime on the CPU or with its CUDA provider."""

from runtime.backends.base import Backend
from runtime.model_spec import INPUT_NAME, PROBS
from runtime.onnx_session import make_session


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, spec, model_file, device="cpu", model="ensemble", threads=0):
        super().__init__(spec, model_file, device, model)
        self.threads = threads
        self.session = None

    @property
    def description(self):
        return f"onnxruntime-{self.device} ({self.file.path.name}, {self.file.precision})"

    def _load(self):
        self.session = make_session(self.file.verified(), self.device, self.threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME]:
            raise ValueError(f"{self.file.path}: inputs {names}, model.json says [{INPUT_NAME!r}]")

    def _infer(self, batch):
        return self.session.run([PROBS], {INPUT_NAME: batch})[0]

    def _free(self):
        self.session = None
