"""Where `--pretrained` weights come from, and what the run records of them.

``--pretrained`` is a local torchvision ResNet state-dict file, or ``imagenet`` / ``imagenet-v2``:
torchvision's IMAGENET1K_V1 / IMAGENET1K_V2 weights for the run's ``--arch``. Those are read from
the torch hub cache (``torch.hub.get_dir()/checkpoints``, under TORCH_HOME) when the file is there,
without touching the network, and otherwise downloaded from torchvision's own URL into that cache.
Either way the file is checked against the sha256 prefix its name carries (as torch.hub does).
*Decision*: the words ``imagenet`` and ``imagenet-v2`` always mean the hub weights, even if a file
of that name exists in the working folder (``./imagenet`` reaches such a file).
"""

import re
from pathlib import Path

from runtime.errors import DataError
from runtime.model_spec import sha256_of

HUB = {"imagenet": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}
WIDTH = 64  # the --width of torchvision's ResNets: the only one their tensors fit
_HASH = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's HASH_REGEX: resnet18-f37072fd.pth -> f37072fd


def hub_weights(spec, arch):
    """torchvision's weights enum member for ``--pretrained spec`` and ``--arch arch``, or a
    ValueError naming the values this arch has."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    valid = [k for k, member in HUB.items() if member in enum.__members__]
    if HUB[spec] not in enum.__members__:
        raise ValueError(f"--pretrained {spec}: torchvision has no {HUB[spec]} weights for --arch {arch}; "
                         f"valid: {', '.join(valid)} or a local weights file")
    return enum[HUB[spec]]


def hub_file(weights):
    """Where torch.hub keeps (or will keep) the file of ``weights``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url.split("?")[0]).name


def _check_hash(path, url):
    """The sha256 of ``path`` starts with the prefix its name carries; returns the full sha256."""
    digest = sha256_of(path)
    match = _HASH.search(path.name)
    if match and not digest.startswith(match.group(1)):
        raise DataError(path, f"sha256 {digest[:12]}... does not start with {match.group(1)}, the hash its name "
                              f"carries (a damaged or partial download): delete it, or fetch {url} again")
    return digest


def resolve(spec, arch, width=None):
    """``--pretrained spec`` as (name recorded in the run, local file path). A hub weights file is
    taken from the cache when present, otherwise downloaded into it; a download that fails for any
    reason is one DataError naming the file, its URL and the folder to put it in. ``width``: the
    run's --width, refused unless it is torchvision's before anything is downloaded."""
    if spec not in HUB:
        return spec, Path(spec)
    weights = hub_weights(spec, arch)
    if width is not None and width != WIDTH:
        raise ValueError(f"--pretrained {spec}: torchvision's ImageNet weights are for --width {WIDTH}, "
                         f"not --width {width}")
    path = hub_file(weights)
    name = f"imagenet:{type(weights).__name__}.{weights.name}"
    if not path.is_file():
        import torch

        try:
            torch.hub.load_state_dict_from_url(weights.url, check_hash=True, progress=True, map_location="cpu",
                                               weights_only=True)
        except (OSError, RuntimeError, ValueError) as err:  # URLError/HTTPError are OSErrors; a bad hash RuntimeError
            reason = str(err).splitlines()[0][:200] if str(err) else ""
            raise DataError(path, f"--pretrained {spec}: not in the torch hub cache and the download failed "
                                  f"({type(err).__name__}: {reason}); fetch {weights.url} and put it in "
                                  f"{path.parent}") from None
        if not path.is_file():
            raise DataError(path, f"--pretrained {spec}: downloaded, but torch.hub did not keep it here")
    _check_hash(path, weights.url)
    return name, path


def source(spec, arch, width=None):
    """(path to load, {"name", "sha256"} the run records) for ``--pretrained spec``."""
    name, path = resolve(spec, arch, width)
    try:
        digest = sha256_of(path)
    except OSError as err:
        raise DataError(path, f"--pretrained: not readable ({err.strerror or err})") from None
    return path, {"name": name, "sha256": digest}
