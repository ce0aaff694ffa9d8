"""``make_backend``: a request to an unentered backend, through the selection policy
(runtime/backends/select.py). Its own module so that base.py (the contract and the registry) never
imports the policy, which may import backends (the TensorRT for RTX probe runs two of them)."""

import logging

from runtime.backends.base import backend_class

log = logging.getLogger(__name__)


def make_backend(spec, name="auto", model="ensemble", precision=None, device=None, env=None,
                 partial_options=False, **options):
    """The backend for a request (not yet entered); ``runtime.backends.select.choose`` decides
    which backend and file, and ``backend.choice.reason`` says why. ``options`` go to the chosen
    backend's constructor (its ``options`` lists the ones it takes, e.g. onnxruntime-tensorrt's
    ``engine_cache``); one it does not take is an error, unless ``partial_options`` (those are
    left out: a bench gives one set to several backends, runtime.bench)."""
    from runtime.backends.select import choose

    choice = choose(spec, name, precision, device, model, env)
    cls = backend_class(choice.backend)
    if partial_options:
        options = {k: v for k, v in options.items() if k in cls.options}
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(f"backend {choice.backend} takes no option {unknown[0]!r}"
                         + (f" (it takes: {', '.join(cls.options)})" if cls.options else ""))
    backend = cls(spec, choice.file, device=choice.device, model=model, **options)
    backend.choice = choice
    for option, why in backend.ignored_options.items():  # e.g. cuda_graph=1 on the CPU: said, not refused
        log.warning("backend option %s ignored by %s: %s", option, backend.description, why)
    return backend
