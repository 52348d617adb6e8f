"""State on disk that only the platform's user may read: folders 0700, files 0600.

The embedded Redis keeps names, passports, e-mails and password hashes in its append-only files;
the state folder keeps the sealing key and the admin token. None of it may be world-readable,
whatever the umask of the shell that started `ussdgw`.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077


def private_dir(path: str | Path) -> Path:
    """`path` (and missing parents) created, and `path` itself made 0700 even if it existed."""
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def read_or_create_secret(path: str | Path, make: str) -> str:
    """The text in `path`, or `make` written there first (0600, created exclusively: two processes
    starting at once agree on one value)."""
    file = Path(path)
    private_dir(file.parent)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return file.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(make)
    return make
