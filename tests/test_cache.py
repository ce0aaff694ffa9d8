import json
from pathlib import Path

import numpy as np
import pytest

from runtime.labels import read_labels
from runtime.preprocess import Preprocess, resize
from runtime.reader import ImageFolder
from train import cache


def _ids(tiny_data):
    return list(read_labels(tiny_data / "train.csv"))


def test_cache_holds_the_decoded_resized_samples_and_reopens_without_decoding(tiny_data, tmp_path, monkeypatch):
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=32)
    rows, errors, images = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    assert rows == ids and errors == [] and images.dtype == np.uint8 and images.shape == (len(ids), 32, 32, 4)
    assert np.array_equal(images[3], resize(folder.read(ids[3]), pp))
    monkeypatch.setattr(ImageFolder, "read", lambda *a: pytest.fail("decoded again"))
    assert np.array_equal(cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)[2], images)


def test_other_size_rebuilds(tiny_data, tmp_path):
    folder, ids = ImageFolder(tiny_data / "train"), _ids(tiny_data)
    cache.build_cache(tmp_path / "c", folder, ids, Preprocess(size=32), progress=False)
    assert cache.build_cache(tmp_path / "c", folder, ids, Preprocess(size=16), progress=False)[2].shape[1] == 16
    assert json.loads((tmp_path / "c" / cache.MANIFEST).read_text())["size"] == 16


def test_other_interpolation_rebuilds(tiny_data, tmp_path):
    folder, ids = ImageFolder(tiny_data / "train"), _ids(tiny_data)
    cache.build_cache(tmp_path / "c", folder, ids, Preprocess(size=16), progress=False)
    pp = Preprocess(size=16, interpolation="linear")
    images = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)[2]
    assert np.array_equal(images[0], resize(folder.read(ids[0]), pp))


def test_killed_build_resumes_where_it_stopped(tiny_data, tmp_path, monkeypatch):
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=32)
    read, calls = ImageFolder.read, []

    def crashing(self, sample_id):
        calls.append(sample_id)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return read(self, sample_id)
    monkeypatch.setattr(ImageFolder, "read", crashing)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False, flush_every=4)
    assert not (tmp_path / "c" / cache.MANIFEST).exists()
    calls.clear()
    monkeypatch.setattr(ImageFolder, "read", lambda self, i: (calls.append(i), read(self, i))[1])
    rows, _, images = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False, flush_every=4)
    assert calls == ids[8:] and rows == ids
    assert np.array_equal(images[2], resize(read(folder, ids[2]), pp))


def test_unreadable_sample_is_an_error_row_not_an_image(tiny_data, tmp_path):
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=32)
    rows, errors, images = cache.build_cache(tmp_path / "c", folder, ids + ["missing-id"], pp, progress=False)
    assert rows == ids and images.shape[0] == len(ids) and [e[0] for e in errors] == ["missing-id"]


def test_truncated_cache_file_is_one_clear_error(tiny_data, tmp_path):
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=32)
    cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    path = tmp_path / "c" / cache.IMAGES
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(Exception, match="images.npy"):
        cache.open_cache(tmp_path / "c", cache.cache_key(folder, ids, pp))


def test_training_through_the_cache_gives_bit_identical_out_of_fold_predictions(tiny_run, tiny_data, tmp_path):
    from train.config import FitConfig
    from train.fit import fit

    from tests.conftest import TINY_SETTINGS
    run, _ = tiny_run
    out = tmp_path / "cached"
    fit(FitConfig(data=str(tiny_data), out=str(out), cache=str(tmp_path / "c"), **TINY_SETTINGS), progress=False)
    assert (tmp_path / "c" / cache.MANIFEST).is_file()
    assert (out / "oof.csv").read_bytes() == (run / "oof.csv").read_bytes()
    assert (out / "errors.csv").read_bytes() == (run / "errors.csv").read_bytes()
    for fold in ("fold0", "fold1"):
        assert np.array_equal(np.load(run / fold / "oof_single.npy"), np.load(out / fold / "oof_single.npy"))


def test_samples_through_the_cache_pickle_as_the_path_not_the_pixels(tiny_data, tmp_path):
    import pickle

    from train.data import Samples
    samples = Samples(tiny_data / "train.csv", tiny_data / "train", Preprocess(size=32), progress=False,
                      cache_dir=tmp_path / "c")
    blob = pickle.dumps(samples)
    assert len(blob) < samples.images.nbytes / 4
    again = pickle.loads(blob)
    assert isinstance(again.images, np.memmap) and np.array_equal(again.get(5), samples.get(5))


def test_a_second_builder_is_refused_in_one_line_while_one_builds(tiny_data, tmp_path):
    from runtime.errors import DataError
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=32)
    import subprocess
    import sys
    import time
    (tmp_path / "c").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from runtime.outlock import writer_lock\n"
                               "with writer_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(30)",
                               str(tmp_path / "c")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError) as err:
            cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "c" / cache.MANIFEST).exists()
    assert "\n" not in str(err.value) and str(tmp_path / "c") in str(err.value)


def _crash_after(monkeypatch, n):
    read, calls = ImageFolder.read, []

    def crashing(self, sample_id):
        calls.append(sample_id)
        if len(calls) > n:
            raise KeyboardInterrupt
        return read(self, sample_id)
    monkeypatch.setattr(ImageFolder, "read", crashing)


def test_a_killed_build_for_other_ids_never_leaves_its_partial_to_be_resumed_as_ours(tiny_data, tmp_path,
                                                                                        monkeypatch):
    # build A killed after its progress was flushed; then a build for other Ids (same count, so the
    # same array shape) killed before its first flush recreated the partial: A's rerun must decode
    # again, not take the new partial's rows as its own
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=16)
    a, b = ids[:20], ids[20:40]
    read = ImageFolder.read
    for subset, n in ((a, 8), (b, 2)):
        with monkeypatch.context() as m:
            _crash_after(m, n)
            with pytest.raises(KeyboardInterrupt):
                cache.build_cache(tmp_path / "c", folder, subset, pp, progress=False, flush_every=4)
    rows, _, images = cache.build_cache(tmp_path / "c", folder, a, pp, progress=False, flush_every=4)
    assert rows == a
    assert all(np.array_equal(images[i], resize(read(folder, a[i]), pp)) for i in range(len(a)))


def test_a_cache_path_that_is_a_file_is_one_line_naming_the_option(tiny_data, tmp_path):
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=16)
    (tmp_path / "c").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="--cache is a file, not a folder"):
        cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)


def test_errors_name_the_files_as_this_run_names_the_folder_not_as_the_build_did(tiny_data, tmp_path, monkeypatch):
    # the cache is built through --data given relative, then used through the same folder given
    # absolute (same fingerprint, so the same cache): errors.csv must read as it does without it
    import shutil

    from train.data import Samples
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = sorted((data / "train").glob("*_blue.png"))[0]
    bad.write_bytes(b"garbage")
    monkeypatch.chdir(tmp_path)
    Samples(Path("data") / "train.csv", Path("data") / "train", Preprocess(size=16), progress=False,
            cache_dir=tmp_path / "c")
    cached = Samples(data / "train.csv", data / "train", Preprocess(size=16), progress=False, cache_dir=tmp_path / "c")
    plain = Samples(data / "train.csv", data / "train", Preprocess(size=16), progress=False)
    assert len(plain.errors) == 1
    assert [tuple(map(str, e)) for e in cached.errors] == [tuple(map(str, e)) for e in plain.errors]


def test_a_second_builder_waits_for_the_first_and_reads_its_cache(tiny_data, tmp_path, monkeypatch):
    # torchrun ranks or --fold jobs started together on a new cache: one builds, the other waits for
    # it and then reads the cache without decoding anything (no rank refused, no double work)
    import subprocess
    import sys
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=16)
    script = ("import sys, time\nfrom runtime.reader import ImageFolder\nfrom runtime.labels import read_labels\n"
              "from runtime.preprocess import Preprocess\nfrom train import cache\nread = ImageFolder.read\n"
              "def slow(self, i):\n    print('building', flush=True); time.sleep(0.05); return read(self, i)\n"
              "ImageFolder.read = slow\n"
              "cache.build_cache(sys.argv[1], ImageFolder(sys.argv[2]), list(read_labels(sys.argv[3])),"
              " Preprocess(size=16), progress=False)\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c"), str(tiny_data / "train"),
                              str(tiny_data / "train.csv")], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "building"
        monkeypatch.setattr(ImageFolder, "read", lambda *a: pytest.fail("decoded while another process built"))
        rows, errors, images = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    finally:
        first.stdout.read()
        assert first.wait(timeout=60) == 0
    assert rows == ids and errors == [] and images.shape == (len(ids), 16, 16, 4)
