import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.writeutil import atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_umask_mode_not_mkstemp_0600(tmp_path, umask, mode):
    # A fresh interpreter: the mode is read from the umask when writeutil is imported.
    code = ("import sys; from runtime.writeutil import atomic_write_json, atomic_write_text; "
            "atomic_write_text(sys.argv[1] + '/submission.csv', 'Id\\n'); atomic_write_json(sys.argv[1] + '/model.json', {})")
    subprocess.run([sys.executable, "-c", f"import os; os.umask({umask}); {code}", str(tmp_path)],
                   cwd=ROOT, check=True)
    for name in ("submission.csv", "model.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode


def test_infer_outputs_are_readable_by_the_group(tiny_data, tiny_deploy, tmp_path):
    from runtime.__main__ import main

    out = tmp_path / "out"
    assert main(["infer", "--model", str(tiny_deploy[0]), "--images", str(tiny_data / "test"), "--out", str(out),
                 "--tta", "1"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("submission.csv", "probabilities.csv", "errors.csv", "summary.json"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o666 & ~umask


def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as err:
        atomic_write_text(tmp_path / "out.csv", "x")
    assert err.value.filename == str(tmp_path / "out.csv") and os.listdir(tmp_path) == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError) as err:
        with atomic_path(tmp_path / "file" / "below.csv"):
            pass
    assert err.value.filename == str(tmp_path / "file")
