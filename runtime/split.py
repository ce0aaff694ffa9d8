"""Split a huge flat image folder into numbered sub-folders, and merge it back.

``split`` keeps the four channel files of an Id together, at most ``per_dir`` Ids per
sub-folder, and writes ``manifest.csv`` (``Id,dir``) that :class:`runtime.reader.ImageFolder`
reads, so a split dataset loads directly. The plan (the manifest) is written first, so an
interrupted run resumes with the same assignment; each file is copied to a temporary name and
renamed, so no half-written file ever carries a final name; an existing file is never
overwritten (identical: skipped; different: refused).
"""

import csv
import filecmp
import io
import os
import shutil
from pathlib import Path

from runtime.classes import CHANNELS
from runtime.cli import warn
from runtime.errors import DataError
from runtime.labels import read_manifest
from runtime.ids import check_id
from runtime.reader import ImageFolder, channel_files
from runtime.writeutil import atomic_path, atomic_write_text


def _image_files(folder):
    """{Id: {channel: file name}} of the channel images directly in ``folder``."""
    groups = {}
    for sample_id, channel, name in channel_files(folder):
        groups.setdefault(sample_id, {})[channel] = name
    return groups


def _transfer(src, dst, move):
    """Copy (or move) one file without ever overwriting; True when something was written."""
    if dst.exists():
        if src.exists() and not filecmp.cmp(src, dst, shallow=False):
            raise DataError(dst, f"exists and differs from {src}; refusing to overwrite")
        if move and src.exists():
            src.unlink()
        return False
    if move:
        try:
            os.replace(src, dst)  # same file system: atomic rename
            return True
        except OSError:
            pass
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    if move:
        src.unlink()
    return True


def split(src, dst, per_dir, move=False, dry_run=False, report=print, warn=warn):
    """``report``: the progress lines (stdout); ``warn``: the warnings (runtime.cli.warn: stderr)."""
    src, dst = Path(src), Path(dst)
    if per_dir < 1:
        raise ValueError("--per-dir must be at least 1")
    if not src.is_dir():
        raise DataError(src, "source folder not found")
    groups = _image_files(src)
    manifest_path = dst / ImageFolder.MANIFEST
    plan = read_manifest(manifest_path) if manifest_path.exists() else {}
    new = sorted(i for i in groups if i not in plan)
    for sample_id in new:
        check_id(sample_id, str(src / sample_id))
    start = len(plan)
    for n, sample_id in enumerate(new, start=start):
        plan[sample_id] = f"{n // per_dir:05d}"
    incomplete = {i: [c for c in CHANNELS if c not in files] for i, files in groups.items()
                  if len(files) < len(CHANNELS)}
    for sample_id, missing in sorted(incomplete.items()):
        warn(f"{src / sample_id}: missing {', '.join(missing)} (its other files are split as usual)")
    if dry_run:
        dirs = sorted(set(plan.values()))
        report(f"dry run: {len(groups)} Ids into {len(dirs)} folders of at most {per_dir}; nothing written")
        return {"ids": len(groups), "dirs": len(dirs), "written": 0, "incomplete": incomplete}
    dst.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Id", "dir"])
    writer.writerows(sorted(plan.items(), key=lambda kv: (kv[1], kv[0])))
    atomic_write_text(manifest_path, buf.getvalue())
    written = 0
    for sample_id, files in sorted(groups.items()):
        folder = dst / plan[sample_id]
        folder.mkdir(exist_ok=True)
        for name in files.values():
            written += _transfer(src / name, folder / name, move)
    report(f"{'moved' if move else 'copied'} {written} files of {len(groups)} Ids into "
           f"{len(set(plan.values()))} folders under {dst}; manifest: {manifest_path}")
    return {"ids": len(groups), "dirs": len(set(plan.values())), "written": written, "incomplete": incomplete}


def merge(src, dst, move=False, report=print):
    """Put a split folder back together into one flat folder."""
    src, dst = Path(src), Path(dst)
    manifest = read_manifest(src / ImageFolder.MANIFEST)
    dst.mkdir(parents=True, exist_ok=True)
    written = 0
    for sub in sorted(set(manifest.values())):
        folder = src / sub
        if not folder.is_dir():
            continue
        for sample_id, files in sorted(_image_files(folder).items()):
            for name in files.values():
                written += _transfer(folder / name, dst / name, move)
    report(f"{'moved' if move else 'copied'} {written} files of {len(manifest)} Ids into {dst}")
    return {"ids": len(manifest), "written": written}


def split_command(args):
    split(args.src, args.dst, args.per_dir, args.move, args.dry_run)
    return 0


def merge_command(args):
    merge(args.src, args.dst, args.move)
    return 0
