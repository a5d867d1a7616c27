"""Writing rendered rules to a folder (the CLI's sink).

Files are written only after a whole render succeeded, each one atomically (temporary file + rename), so Falco
watching the folder never reads half a file and a failed fetch leaves the folder exactly as it was. Stale
shards of the same feed (``<prefix>-<n>.yaml`` beyond the new count) are removed; nothing else is touched.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path


def write_files(out_dir: Path, files: Mapping[str, bytes], prefix: str, suffix: str) -> list[Path]:
    """Write ``files`` into ``out_dir``; remove this prefix's other ``<prefix>-<n><suffix>`` files. Returns paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, content in sorted(files.items()):
        target = out_dir / name
        if target.is_file() and target.read_bytes() == content:
            written.append(target)
            continue
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    ours = re.compile(re.escape(prefix) + r"-[0-9]+" + re.escape(suffix) + "$")
    for stale in out_dir.iterdir():
        if ours.fullmatch(stale.name) and stale.name not in files:
            stale.unlink()
    return written
