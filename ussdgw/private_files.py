"""State on disk that only the platform's user may read: folders 0700, files 0600.

The embedded Redis keeps names, passports, e-mails and password hashes in its append-only files;
the state folder keeps the sealing key and the admin token. None of it may be world-readable,
whatever the umask of the shell that started `ussdgw`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_dir(path: str | Path) -> Path:
    """`path` (and missing parents) created, and `path` itself made 0700 even if it existed."""
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def read_or_create_secret(path: str | Path, make: str) -> str:
    """The text in `path`, or `make` put there first (0600). The file appears whole or not at all
    (written aside, then hard-linked into place, which fails if another process got there first),
    so two processes starting at once agree on one value and never read a half-written one."""
    file = Path(path)
    folder = private_dir(file.parent)
    if file.exists():
        return file.read_text().strip()
    fd, aside = tempfile.mkstemp(dir=folder, prefix=f".{file.name}.")  # 0600 by mkstemp
    try:
        with os.fdopen(fd, "w") as out:
            out.write(make)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(aside, file)
        except FileExistsError:
            return file.read_text().strip()
        return make
    finally:
        os.unlink(aside)
