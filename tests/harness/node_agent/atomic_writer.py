"""The kubelet's atomic writer: a volume's files change all at once, by swapping one symlink.

Layout, as on a real node:

    <volume>/..2026_11_29_10_00_00.abc123/   the current payload (a timestamped directory)
    <volume>/..data -> ..2026_11_29_10_00_00.abc123
    <volume>/sender.toml -> ..data/sender.toml

An update writes a new timestamped directory, points `..data_tmp` at it and renames that over `..data`
(rename(2) is atomic), so a reader sees the old payload or the new one, never a mix. Programs that watch
their config file (the sender's hot reload) see the change through `..data`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"
# relative path -> (content, file mode)
Payload = Mapping[str, tuple[bytes, int]]


def _current(volume: Path) -> Path | None:
    link = volume / DATA
    return volume / os.readlink(link) if link.is_symlink() else None


def _file_mode(mode: int, group: int | None) -> int:
    return mode | (0o040 if group is not None else 0)


def _unchanged(directory: Path, payload: Payload, group: int | None) -> bool:
    existing = {str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()}
    if existing != set(payload):
        return False
    for relative, (content, mode) in payload.items():
        stat = (directory / relative).stat()
        if (stat.st_mode & 0o7777) != _file_mode(mode, group) or (group is not None and stat.st_gid != group):
            return False
        if (directory / relative).read_bytes() != content:
            return False
    return True


def write_atomic(volume: Path, payload: Payload, group: int | None = None) -> bool:
    """Makes the volume show exactly `payload`; returns whether anything changed.

    group: the pod's fsGroup, which then owns the files and may read them.
    """
    volume.mkdir(parents=True, exist_ok=True)
    volume.chmod(0o755)
    old = _current(volume)
    if old is not None and old.is_dir() and _unchanged(old, payload, group):
        return False
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    new = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=volume))
    new.chmod(0o755)
    for relative, (content, mode) in payload.items():
        path = new / relative
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_bytes(content)
        path.chmod(_file_mode(mode, group))
        if group is not None:
            os.chown(path, -1, group)
    if group is not None:
        for directory in [new, *(p for p in new.rglob("*") if p.is_dir())]:
            os.chown(directory, -1, group)
    tmp_link = volume / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(new.name)
    tmp_link.rename(volume / DATA)
    _link_visible_names(volume, {relative.split("/", 1)[0] for relative in payload})
    if old is not None and old.is_dir() and old != new:
        shutil.rmtree(old)
    return True


def _link_visible_names(volume: Path, names: set[str]) -> None:
    """Top-level names point through ..data; names no longer in the payload go."""
    for entry in volume.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in names and entry.is_symlink():
            entry.unlink()
    for name in names:
        link = volume / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{name}")
