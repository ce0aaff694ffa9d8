import logging
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from runtime.errors import DataError
from runtime.ids import check_id
from runtime.reader import ImageFolder, decode_channel

CHANNELS = ("red", "green", "blue", "yellow")


def write_sample(folder, sample_id, value=10, size=16, ext=".png"):
    for i, ch in enumerate(CHANNELS):
        img = np.full((size, size), value + i, np.uint8)
        cv2.imwrite(str(folder / f"{sample_id}_{ch}{ext}"), img)


def test_reads_four_channels_in_rgby_order(tmp_path):
    write_sample(tmp_path, "a1")
    sample = ImageFolder(tmp_path).read("a1")
    assert sample.shape == (16, 16, 4) and sample.dtype == np.uint8
    assert sample[0, 0].tolist() == [10, 11, 12, 13]


def test_missing_channel_names_the_file(tmp_path):
    write_sample(tmp_path, "a1")
    (tmp_path / "a1_blue.png").unlink()
    with pytest.raises(DataError, match=r"a1_blue\.png: missing file"):
        ImageFolder(tmp_path).read("a1")
    assert ImageFolder(tmp_path).listing() == ([], {"a1": "missing blue"})


def test_zero_byte_file(tmp_path):
    write_sample(tmp_path, "a1")
    (tmp_path / "a1_green.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"a1_green\.png: empty file"):
        ImageFolder(tmp_path).read("a1")


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "x.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "x.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable or truncated"):
        decode_channel(tmp_path / "x.png")


def test_not_an_image(tmp_path):
    (tmp_path / "x.png").write_text("hello, I am text")
    with pytest.raises(DataError, match=r"x\.png: unreadable"):
        decode_channel(tmp_path / "x.png")


def test_rgb_png_keeps_one_plane_and_warns(tmp_path, caplog):
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 1] = 200  # OpenCV is BGR: the signal is in one plane
    cv2.imwrite(str(tmp_path / "x.png"), img)
    with caplog.at_level(logging.WARNING):
        out = decode_channel(tmp_path / "x.png")
    assert out.shape == (8, 8) and int(out.max()) == 200
    assert "colour image" in caplog.text


def test_16_bit_png_and_tiff_are_scaled_to_8_bit(tmp_path):
    img = np.full((8, 8), 65535, np.uint16)
    img[0, 0] = 0
    img[0, 1] = 257 * 100
    for ext in (".png", ".tif"):
        cv2.imwrite(str(tmp_path / f"x{ext}"), img)
        out = decode_channel(tmp_path / f"x{ext}")
        assert out.dtype == np.uint8
        assert out[0, 0] == 0 and out[0, 1] == 100 and out[1, 1] == 255


def test_jpg_and_tiff_samples_and_other_sizes(tmp_path):
    write_sample(tmp_path, "j1", ext=".jpg")
    write_sample(tmp_path, "t1", ext=".tiff", size=20)
    folder = ImageFolder(tmp_path)
    assert folder.ids() == ["j1", "t1"]
    assert folder.read("t1").shape == (20, 20, 4)
    assert abs(int(folder.read("j1")[4, 4, 0]) - 10) <= 2  # JPEG is lossy


def test_channels_of_different_sizes_are_resized_to_red(tmp_path):
    write_sample(tmp_path, "a1", size=16)
    cv2.imwrite(str(tmp_path / "a1_yellow.png"), np.full((32, 32), 50, np.uint8))
    assert ImageFolder(tmp_path).read("a1").shape == (16, 16, 4)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\\b", "..", "", ".hidden", "a\x00b", "x..y"])
def test_unsafe_ids_are_refused(tmp_path, bad):
    with pytest.raises(DataError, match="unsafe"):
        check_id(bad)
    with pytest.raises(DataError, match="unsafe"):
        ImageFolder(tmp_path).read(bad)


def test_real_hpa_field_reads(real_dir):
    folder = ImageFolder(real_dir / "field_57_F11_1")
    assert folder.ids() == ["57_F11_1"]
    sample = folder.read("57_F11_1")
    assert sample.shape == (1728, 1728, 4) and sample.std() > 5


def png_header(width, height):
    """A small PNG whose header claims width x height 8-bit gray pixels (one row of data): the shape
    of a decompression bomb, a few hundred bytes that would decode to width * height bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(60000, 60000), (10000, 10000)])
def test_decoded_size_is_limited_from_the_header_before_decoding(tmp_path, width, height):
    (tmp_path / "x.png").write_bytes(png_header(width, height))
    with pytest.raises(DataError, match=rf"x\.png: {width}x{height} pixels is over the decoded-size limit"):
        decode_channel(tmp_path / "x.png")


def test_decoded_size_limit_is_configurable(tmp_path, monkeypatch):
    write_sample(tmp_path, "a1", size=16)
    assert ImageFolder(tmp_path, max_pixels=256).read("a1").shape == (16, 16, 4)
    with pytest.raises(DataError, match="16x16 pixels is over the decoded-size limit of 255"):
        ImageFolder(tmp_path, max_pixels=255).read("a1")
    monkeypatch.setenv("HPA_MAX_PIXELS", "100")
    with pytest.raises(DataError, match="limit of 100 "):
        ImageFolder(tmp_path).read("a1")
    monkeypatch.setenv("HPA_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="HPA_MAX_PIXELS: must be a whole number"):
        ImageFolder(tmp_path)


@pytest.mark.parametrize("data, reason", [
    (b"GIF89a" + bytes(30), "not a PNG, JPEG or TIFF"),
    (b"\x89PNG\r\n\x1a\n", "truncated image header"),
    (b"\xff\xd8\xff" + bytes(50), "truncated image header"),
    (b"II*\x00" + bytes(4), "truncated image header"),
])
def test_any_decoder_error_is_a_data_error_naming_the_file(tmp_path, data, reason):
    (tmp_path / "x.png").write_bytes(data)
    with pytest.raises(DataError, match=rf"x\.png: .*{reason}"):
        decode_channel(tmp_path / "x.png")


def test_symlinks_are_followed_inside_the_folder_only(tmp_path):
    outside, folder = tmp_path / "outside", tmp_path / "images"
    outside.mkdir()
    folder.mkdir()
    write_sample(outside, "o1")
    write_sample(folder, "a1")
    for ch in CHANNELS:
        (folder / f"in1_{ch}.png").symlink_to(folder / f"a1_{ch}.png")  # a de-duplicated copy: read
        (folder / f"out1_{ch}.png").symlink_to(outside / f"o1_{ch}.png")  # leads out: refused
    images = ImageFolder(folder)
    assert (images.read("in1") == images.read("a1")).all()
    with pytest.raises(DataError, match=r"out1_red\.png: a symlink to .*outside the image folder"):
        images.read("out1")
    assert ImageFolder(outside).read("o1").shape == (16, 16, 4)
    (folder / "00000").symlink_to(outside, target_is_directory=True)  # a split sub-folder that leads out
    (folder / "manifest.csv").write_text("Id,dir\no1,00000\n")
    with pytest.raises(DataError, match=r"00000/o1_red\.png: a symlink to .*outside the image folder"):
        ImageFolder(folder).read("o1")


def test_unsafe_names_are_listed_as_problems_not_dropped(tmp_path):
    names = ["é1", "a b", "-lead", ".hidden", "cm,x", "x\n"]
    for name in ["ok1", *names]:
        write_sample(tmp_path, name)
    ids, problems = ImageFolder(tmp_path).listing()
    assert ids == ["ok1"] and sorted(problems) == sorted(names)
    assert all("unsafe" in reason for reason in problems.values())


def test_a_channel_file_swapped_for_an_outside_link_after_the_lookup_is_not_followed(tmp_path):
    # The reader checks a file's lstat from its lookup; a path swapped for a symlink leading out
    # of the folder between that lookup and the open must be refused, never read through.
    folder, outside = tmp_path / "images", tmp_path / "secret"
    folder.mkdir()
    outside.mkdir()
    write_sample(folder, "a1")
    write_sample(outside, "a1", value=200)
    path = folder / "a1_red.png"
    looked_up = os.lstat(path)
    path.unlink()
    path.symlink_to(outside / "a1_red.png")
    with pytest.raises(DataError, match="a1_red.png: cannot read"):
        decode_channel(str(path), lstat_result=looked_up)
    with pytest.raises(DataError, match="outside the image folder"):
        ImageFolder(folder).read("a1")  # a fresh lookup sees the link and refuses it as ever
