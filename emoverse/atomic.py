"""Write-then-rename helpers, so a crash never leaves a half-written file or folder in place,
and the file checksum that verifies what was written."""

import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write into (a file or a folder); on success
    it replaces `final` in one rename, on error it is removed and `final` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        _give_default_modes(tmp)
        if tmp.is_dir() and final.exists():
            # A folder cannot be renamed over a non-empty one: move the old one aside first,
            # so the window without `final` is two renames long, never a partial write.
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def default_file_mode() -> int:
    """The mode a new file gets here (0o666 less the umask; 0o644 under the usual 022)."""
    try:  # Linux says without changing it; os.umask can only be read by setting it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _give_default_modes(tmp: Path) -> None:
    """Files get the mode every other file of the data dir has: some writers (safetensors)
    create theirs 0600, which another user of a shared data dir then cannot read."""
    mode = default_file_mode()
    files = [tmp] if tmp.is_file() else [p for p in tmp.rglob("*") if p.is_file()]
    for file in files:
        if not file.is_symlink() and stat.S_IMODE(file.stat().st_mode) != mode:
            file.chmod(mode)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (checksums of books, partitions and
    weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
