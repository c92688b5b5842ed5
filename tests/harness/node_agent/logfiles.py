"""Where a container's output goes: <root>/logs/<namespace>_<pod>_<uid>/<container>/<restartCount>.log,
as the kubelet keeps it under /var/log/pods. Kept apart from the log server, so that readers of the files
(the harness, `python -m tests.harness.cluster logs`) need not import aiohttp."""

from __future__ import annotations

from pathlib import Path


def log_files(directory: Path) -> list[Path]:
    """One file per run of the container, oldest first."""
    files = [p for p in directory.glob("*.log") if p.stem.isdigit()]
    return sorted(files, key=lambda p: int(p.stem))
