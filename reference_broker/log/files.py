"""Small files the log keeps beside its segments (checkpoints, snapshots), replaced atomically,
and the directory fsync that makes renames durable."""

import os
from pathlib import Path


def replace_file(path: Path, text: str, *, fsync: bool) -> None:
    """Write ``text`` to a temporary file and rename it over ``path``: a reader sees the old
    file or the new one, never a torn mix. On OSError the temporary is removed and the error
    raised; ``path`` is left as it was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "w") as file:
            file.write(text)
            file.flush()
            if fsync:
                os.fsync(file.fileno())
        temporary.replace(path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
    """Make renames, creations and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
