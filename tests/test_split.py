import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

import runtime.split as split_module
from runtime.errors import DataError
from runtime.reader import ImageFolder
from runtime.split import merge, split

ROOT = Path(__file__).resolve().parents[1]


def same_tree(a, b):
    names = sorted(p.name for p in Path(a).iterdir() if p.is_file())
    assert names == sorted(p.name for p in Path(b).iterdir() if p.is_file())
    assert all(filecmp.cmp(Path(a) / n, Path(b) / n, shallow=False) for n in names)


def test_split_then_merge_is_byte_identical_and_the_reader_loads_the_split(tiny_data, tmp_path):
    src = tiny_data / "train"
    result = split(src, tmp_path / "split", per_dir=10, report=lambda *_: None)
    assert result["ids"] == 48 and result["dirs"] == 5 and result["written"] == 48 * 4
    subdirs = sorted(p for p in (tmp_path / "split").iterdir() if p.is_dir())
    for d in subdirs:
        files = [p.name for p in d.iterdir()]
        ids = {f.rsplit("_", 1)[0] for f in files}
        assert len(ids) <= 10 and len(files) == 4 * len(ids)  # channels stay together
    split_folder = ImageFolder(tmp_path / "split")
    flat = ImageFolder(src)
    assert split_folder.ids() == flat.ids()
    sample_id = flat.ids()[17]
    assert (split_folder.read(sample_id) == flat.read(sample_id)).all()
    merge(tmp_path / "split", tmp_path / "merged", report=lambda *_: None)
    same_tree(src, tmp_path / "merged")


def test_interrupted_split_resumes(tiny_data, tmp_path, monkeypatch):
    real = split_module._transfer
    calls = {"n": 0}

    def dies(src, dst, move):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return real(src, dst, move)

    monkeypatch.setattr(split_module, "_transfer", dies)
    with pytest.raises(KeyboardInterrupt):
        split(tiny_data / "train", tmp_path / "split", per_dir=7, report=lambda *_: None)
    monkeypatch.setattr(split_module, "_transfer", real)
    assert not list((tmp_path / "split").rglob("*.partial"))
    result = split(tiny_data / "train", tmp_path / "split", per_dir=7, report=lambda *_: None)
    assert result["written"] == 48 * 4 - 49
    merge(tmp_path / "split", tmp_path / "merged", report=lambda *_: None)
    same_tree(tiny_data / "train", tmp_path / "merged")


def test_move_never_overwrites_and_reports_missing_channels(tiny_data, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_data / "train", src)
    victim = sorted(src.glob("*_blue.png"))[0]
    victim.unlink()
    messages = []
    result = split(src, tmp_path / "split", per_dir=20, move=True, report=messages.append, warn=messages.append)
    assert victim.name.rsplit("_", 1)[0] in result["incomplete"]
    assert any("missing blue" in m for m in messages)
    assert not list(src.glob("*.png"))  # moved
    (tmp_path / "merged").mkdir()
    sample = sorted((tmp_path / "split" / "00000").glob("*_red.png"))[0]
    (tmp_path / "merged" / sample.name).write_bytes(b"something else")
    with pytest.raises(DataError, match="refusing to overwrite"):
        merge(tmp_path / "split", tmp_path / "merged", report=lambda *_: None)


def test_scripts_dry_run(tiny_data, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "split_dataset.py"), str(tiny_data / "train"),
                          str(tmp_path / "s"), "--per-dir", "16", "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0 and "48 Ids into 3 folders" in out.stdout and not (tmp_path / "s").exists()
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "merge_dataset.py"), str(tmp_path / "none"),
                          str(tmp_path / "m")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "manifest.csv: missing file" in bad.stderr
