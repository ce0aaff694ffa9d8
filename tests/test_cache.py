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
    assert json.loads((tmp_path / "c" / cache.MANIFEST).read_text())["key"]["size"] == 16


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
    path = cache.images_file(tmp_path / "c", cache.cache_key(folder, ids, pp))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(Exception, match=path.name):
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
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=16)
    first = _slow_builder(tmp_path / "c", tiny_data)
    try:
        assert first.stdout.readline().strip() == "building"
        monkeypatch.setattr(ImageFolder, "read", lambda *a: pytest.fail("decoded while another process built"))
        rows, errors, images = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    finally:
        first.stdout.read()
        assert first.wait(timeout=60) == 0
    assert rows == ids and errors == [] and images.shape == (len(ids), 16, 16, 4)


def _replace_one_image(data, sample_id):
    """Give one sample's green channel other pixels (the file's size and mtime change with them)."""
    import cv2
    path = data / "train" / f"{sample_id}_green.png"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(path), 255 - image)


@pytest.mark.parametrize("change", ["size", "one image"])
def test_reopening_the_cache_after_a_rebuild_for_another_key_gives_the_rows_the_run_started_with(
        tiny_data, tmp_path, change):
    # a --jobs process, a spawned loader worker or a late rank reopens the cache by what it was
    # handed after another run rebuilt the folder for its own key: it must get the rows its run
    # started with (or a clear error), never the other key's pixels
    import pickle
    import shutil

    from train.data import Samples
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    first = Samples(data / "train.csv", data / "train", Preprocess(size=16), progress=False, cache_dir=tmp_path / "c")
    before = np.array(first.images)
    blob = pickle.dumps(first)  # what the process (or worker) receives when it starts
    if change == "one image":
        _replace_one_image(data, first.ids[3])
    size = 8 if change == "size" else 16
    other = Samples(data / "train.csv", data / "train", Preprocess(size=size), progress=False, cache_dir=tmp_path / "c")
    assert other.images.shape[1] == size and not np.array_equal(np.array(other.images), before)
    again = pickle.loads(blob)
    assert np.array_equal(np.array(again.images), before)
    assert np.array_equal(np.array(pickle.loads(pickle.dumps(other)).images), np.array(other.images))


def test_a_rebuild_keeps_the_files_of_a_key_a_process_still_reads_and_a_later_one_removes_them(
        tiny_data, tmp_path, caplog):
    import gc
    import logging
    folder, ids, d = ImageFolder(tiny_data / "train"), _ids(tiny_data), tmp_path / "c"
    _, _, held = cache.build_cache(d, folder, ids, Preprocess(size=16), progress=False)
    kept, pixels = Path(held.filename), np.array(held)
    with caplog.at_level(logging.WARNING, logger="train.cache"):
        cache.build_cache(d, folder, ids, Preprocess(size=8), progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "train.cache"]
    assert len(lines) == 1 and str(d) in lines[0] and "KiB" in lines[0] and "\n" not in lines[0], lines
    assert np.array_equal(np.load(kept, mmap_mode="r"), pixels)  # still whole, for the process reading it
    del held
    gc.collect()
    caplog.clear()
    _, _, now = cache.build_cache(d, folder, ids, Preprocess(size=12), progress=False)
    assert not kept.exists() and not caplog.records
    # the folder holds the current key's files only
    assert sorted(p.name for p in d.iterdir()) == sorted([Path(now.filename).name, cache.MANIFEST,
                                                           cache.index_file(d, cache.cache_key(
                                                               folder, ids, Preprocess(size=12))).name])


def test_a_builder_waiting_in_the_queue_shows_the_running_builds_progress(tiny_data, tmp_path, monkeypatch, caplog):
    import logging
    import re
    folder, ids, pp = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=16)
    first = _slow_builder(tmp_path / "c", tiny_data, ", flush_every=4")
    monkeypatch.setattr(cache, "REPORT_EVERY", 0.3)
    try:
        assert first.stdout.readline().strip() == "building"
        with caplog.at_level(logging.INFO, logger="train.cache"):
            rows, _, _ = cache.build_cache(tmp_path / "c", folder, ids, pp, progress=False)
    finally:
        first.stdout.read()
        assert first.wait(timeout=60) == 0
    assert rows == ids
    done = [int(m.group(1)) for r in caplog.records
            if (m := re.search(rf"{re.escape(str(tmp_path / 'c'))}: .*building this cache: (\d+)/48 images",
                               r.getMessage()))]
    assert len(done) >= 2 and done == sorted(done) and done[-1] > done[0], [r.getMessage() for r in caplog.records]


def test_ctrl_c_while_waiting_for_another_build_is_one_line_and_that_build_goes_on(tiny_data, tmp_path):
    import signal
    import subprocess
    import sys
    d = tmp_path / "c"
    build = ("import sys, time\nfrom runtime.reader import ImageFolder\nfrom runtime.labels import read_labels\n"
             "from runtime.preprocess import Preprocess\nfrom runtime.cli import guarded, setup_logging\n"
             "from train import cache\nread = ImageFolder.read\n"
             "def slow(self, i):\n    print('building', flush=True); time.sleep(float(sys.argv[4]));"
             " return read(self, i)\nImageFolder.read = slow\nsetup_logging()\n"
             "def build():\n    cache.build_cache(sys.argv[1], ImageFolder(sys.argv[2]),"
             " list(read_labels(sys.argv[3])), Preprocess(size=16), False, 4)\n    return 0\n"
             "sys.exit(guarded(build))\n")
    args = [str(d), str(tiny_data / "train"), str(tiny_data / "train.csv")]
    first = subprocess.Popen([sys.executable, "-c", build] + args + ["0.08"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "building"
        waiter = subprocess.Popen([sys.executable, "-c", build] + args + ["0"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert "waiting for it" in waiter.stderr.readline()
        waiter.send_signal(signal.SIGINT)
        out, err = waiter.communicate(timeout=30)
    finally:
        first.stdout.read()
        assert first.wait(timeout=60) == 0
    assert waiter.returncode == 130 and out == "", (out, err)
    lines = err.splitlines()
    assert len(lines) == 2 and lines[1] == "error: interrupted", err
    assert lines[0].startswith(f"warning: {d}: stopped waiting for another process's build of this cache (")
    assert lines[0].endswith("; that build goes on")
    assert cache.open_cache(d, cache.cache_key(ImageFolder(tiny_data / "train"), _ids(tiny_data),
                                                 Preprocess(size=16))) is not None


def test_a_key_whose_files_a_process_still_holds_is_made_current_again_without_decoding(tiny_data, tmp_path,
                                                                                         monkeypatch):
    # runs at --size 16 and 8 alternate on one folder while the first still trains: going back to 16
    # takes the kept files instead of decoding the set again
    folder, ids, d = ImageFolder(tiny_data / "train"), _ids(tiny_data), tmp_path / "c"
    _, _, held = cache.build_cache(d, folder, ids, Preprocess(size=16), progress=False)
    cache.build_cache(d, folder, ids, Preprocess(size=8), progress=False)
    monkeypatch.setattr(ImageFolder, "read", lambda *a: pytest.fail("decoded again"))
    rows, _, again = cache.build_cache(d, folder, ids, Preprocess(size=16), progress=False)
    assert rows == ids and again.filename == held.filename and np.array_equal(again, held)
    assert json.loads((d / cache.MANIFEST).read_text())["key"]["size"] == 16
    assert not list(d.glob("images-*.npy.partial"))


def test_a_cache_in_the_unkeyed_layout_is_rebuilt_and_its_files_removed(tiny_data, tmp_path):
    folder, ids, pp, d = ImageFolder(tiny_data / "train"), _ids(tiny_data), Preprocess(size=16), tmp_path / "c"
    d.mkdir()
    old_key = dict(cache.cache_key(folder, ids, pp), version=2)
    np.save(d / "images.npy", np.zeros((len(ids), 16, 16, 4), np.uint8))
    (d / "index.json").write_text(json.dumps({"ids": ids, "errors": [], "root": str(folder.root)}))
    (d / cache.MANIFEST).write_text(json.dumps(old_key))
    rows, _, images = cache.build_cache(d, folder, ids, pp, progress=False)
    assert rows == ids and np.array_equal(images[0], resize(folder.read(ids[0]), pp))
    assert not (d / "images.npy").exists() and not (d / "index.json").exists()


def _slow_builder(cache_dir, data, extra=""):
    """Another process building ``cache_dir`` from ``data``, slowly (50 ms a sample); it prints
    'building' when its first sample is read. ``extra``: more build_cache arguments, as source."""
    import subprocess
    import sys
    script = ("import sys, time\nfrom runtime.reader import ImageFolder\nfrom runtime.labels import read_labels\n"
              "from runtime.preprocess import Preprocess\nfrom train import cache\nread = ImageFolder.read\n"
              "def slow(self, i):\n    print('building', flush=True); time.sleep(0.05); return read(self, i)\n"
              "ImageFolder.read = slow\n"
              "cache.build_cache(sys.argv[1], ImageFolder(sys.argv[2]), list(read_labels(sys.argv[3])),"
              f" Preprocess(size=16), progress=False{extra})\n")
    return subprocess.Popen([sys.executable, "-c", script, str(cache_dir), str(data / "train"),
                             str(data / "train.csv")], stdout=subprocess.PIPE, text=True)
