"""`train fit --pretrained imagenet`: torchvision's ImageNet weights for --arch, taken from the
torch hub cache under TORCH_HOME without touching the network when the file is there, one line
naming the file, its URL and the folder when it is not and cannot be fetched, and the run folder
records which weights it started from. Nothing here downloads: every test has its own TORCH_HOME,
the weights are a small fake file, and torch.hub's download fails the test if called."""

import hashlib
import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from train.__main__ import main as train_main
from train import pretrained
from train.model import build_model

FIT = ["--folds", "2", "--width", "8", "--size", "48", "--epochs", "1", "--batch-size", "8", "--threads", "1"]
V1 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


def train(argv):
    try:
        return train_main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh TORCH_HOME; ResNet18_Weights.IMAGENET1K_V1 points at a small fake file (width 8, as
    FIT trains) whose name carries its sha256 prefix as torchvision's do; returns (url, cached path)
    with the file not yet in the cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    fake = tmp_path / "fake.pth"
    torch.save(build_model("resnet18", "none", 8).state_dict(), fake)
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    url = f"https://download.pytorch.org/models/resnet18-{digest[:8]}.pth"
    monkeypatch.setattr(V1.value, "url", url)
    monkeypatch.setattr(pretrained, "WIDTH", 8)  # the fake weights' width
    cached = Path(torch.hub.get_dir()) / "checkpoints" / f"resnet18-{digest[:8]}.pth"
    assert str(cached).startswith(str(tmp_path))
    return url, cached, fake, digest


def offline(monkeypatch, calls=None):
    def refuse(url, *a, **k):
        if calls is not None:
            calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def no_decoding(monkeypatch):
    from train import data

    monkeypatch.setattr(data.Samples, "__init__", lambda *a, **k: pytest.fail("decoded the images"))


def one_error(capsys):
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    return err


def test_cached_weights_are_used_offline_and_recorded_and_resume_checks_them(hub, tiny_data, tmp_path,
                                                                               monkeypatch, capsys):
    url, cached, fake, digest = hub
    cached.parent.mkdir(parents=True)
    cached.write_bytes(fake.read_bytes())
    calls = []
    offline(monkeypatch, calls)
    from train import fit as fit_module

    loaded, load = [], fit_module.load_pretrained
    monkeypatch.setattr(fit_module, "load_pretrained", lambda model, path: loaded.append(Path(path)) or load(model, path))
    out = tmp_path / "run"
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--pretrained", "imagenet"])
    assert code == 0 and calls == [], capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["fit"]["pretrained"] == "imagenet"
    assert config["pretrained"] == {"name": "imagenet:ResNet18_Weights.IMAGENET1K_V1", "sha256": digest}
    # the check before decoding and each of the two folds' models load the cached file
    assert loaded == [cached] * 3

    # resuming with other weights is refused like any other setting, and the run is left as it was
    local = tmp_path / "local.pt"
    torch.save(build_model("resnet18", "none", 8).state_dict(), local)
    before = (out / "config.json").read_bytes()
    capsys.readouterr()
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), "--resume", *FIT, "--pretrained", str(local)])
    err = one_error(capsys)
    assert code == 2 and "run was made with other settings (pretrained)" in err, err
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), "--resume", *FIT])
    err = one_error(capsys)
    assert code == 2 and "pretrained" in err, err
    assert (out / "config.json").read_bytes() == before


def test_a_local_file_is_recorded_by_path_and_sha256_and_its_contents_are_checked_on_resume(
        hub, tiny_data, tmp_path, monkeypatch, capsys):
    offline(monkeypatch)
    local = tmp_path / "local.pt"
    torch.save(build_model("resnet18", "none", 8).state_dict(), local)
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    out = tmp_path / "run"
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--fold", "0", "--pretrained", str(local)])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["pretrained"] == {"name": str(local), "sha256": digest}
    torch.save(build_model("resnet18", "none", 8).state_dict(), local)  # other weights under the same name
    capsys.readouterr()
    no_decoding(monkeypatch)
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--fold", "1", "--pretrained", str(local)])
    err = one_error(capsys)
    assert code == 2 and f"run started from weights {local} with sha256 {digest[:12]}" in err, err
    assert not (out / "fold1").exists()


def test_missing_from_the_cache_offline_names_the_file_its_url_and_the_folder(hub, tiny_data, tmp_path,
                                                                                monkeypatch, capsys):
    url, cached, _, _ = hub
    offline(monkeypatch)
    no_decoding(monkeypatch)
    out = tmp_path / "run"
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--pretrained", "imagenet"])
    err = one_error(capsys)
    assert code == 2 and not out.exists(), err
    assert f"error: {cached}: --pretrained imagenet: not in the torch hub cache and the download failed (URLError" in err
    assert f"fetch {url} and put it in {cached.parent}" in err


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   urllib.error.HTTPError("u", 403, "Forbidden", {}, None),
                                   RuntimeError('invalid hash value (expected "f37072fd", got "0000")')])
def test_any_download_error_is_one_line(error, hub, tiny_data, tmp_path, monkeypatch, capsys):
    url, cached, _, _ = hub

    def fail(*a, **k):
        raise error
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    no_decoding(monkeypatch)
    code = train(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *FIT, "--pretrained", "imagenet"])
    err = one_error(capsys)
    assert code == 2 and f"error: {cached}: " in err and f"{type(error).__name__}: " in err and url in err, err


def test_a_damaged_cached_file_is_refused_by_its_hash_prefix(hub, tiny_data, tmp_path, monkeypatch, capsys):
    url, cached, fake, digest = hub
    cached.parent.mkdir(parents=True)
    cached.write_bytes(fake.read_bytes()[:-100])  # a partial download under the right name
    offline(monkeypatch)
    no_decoding(monkeypatch)
    code = train(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *FIT, "--pretrained", "imagenet"])
    err = one_error(capsys)
    assert code == 2 and f"error: {cached}: sha256 " in err, err
    assert f"does not start with {digest[:8]}, the hash its name carries" in err and url in err


def test_imagenet_v2_for_an_arch_without_it_lists_the_valid_choices(tmp_path, monkeypatch, tiny_data, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    offline(monkeypatch)
    no_decoding(monkeypatch)
    code = train(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *FIT, "--pretrained", "imagenet-v2"])
    err = one_error(capsys)
    assert code == 2, err
    assert ("--pretrained imagenet-v2: torchvision has no IMAGENET1K_V2 weights for --arch resnet18; "
            "valid: imagenet or a local weights file") in err


def test_imagenet_v2_resolves_resnet50s_v2_file_in_the_hub_cache(tmp_path, monkeypatch):
    from train.pretrained import hub_file, hub_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    weights = hub_weights("imagenet-v2", "resnet50")
    assert weights is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert hub_weights("imagenet", "resnet34") is torchvision.models.ResNet34_Weights.IMAGENET1K_V1
    assert hub_file(weights) == tmp_path / "torch-home" / "hub" / "checkpoints" / Path(weights.url).name


def test_a_missing_file_is_fetched_from_torchvisions_url_into_the_cache_with_its_hash_checked(
        hub, tiny_data, tmp_path, monkeypatch, capsys):
    url, cached, fake, digest = hub
    calls = []

    def download(u, **options):  # what torch.hub does on success: the file lands in the cache
        calls.append((u, options))
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(fake.read_bytes())
        return torch.load(cached, weights_only=True)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    out = tmp_path / "run"
    code = train(["fit", "--data", str(tiny_data), "--out", str(out), *FIT, "--fold", "0", "--pretrained", "imagenet"])
    assert code == 0, capsys.readouterr().err
    assert len(calls) == 1 and calls[0][0] == url  # once: the folds find it in the cache
    assert calls[0][1]["check_hash"] is True and calls[0][1]["progress"] is True
    assert json.loads((out / "config.json").read_text())["pretrained"]["sha256"] == digest


def test_imagenet_at_another_width_is_refused_before_any_download(tmp_path, monkeypatch, tiny_data, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    calls = []
    offline(monkeypatch, calls)
    no_decoding(monkeypatch)
    code = train(["fit", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *FIT, "--pretrained", "imagenet"])
    err = one_error(capsys)
    assert code == 2 and calls == [], err
    assert "--pretrained imagenet: torchvision's ImageNet weights are for --width 64, not --width 8" in err
