"""Writing an export folder so that nobody ever sees half of one: everything goes into a hidden staging folder beside
the destination, which is renamed into place only when complete (``staged_dir``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.errors import DraftScopeError


def check_destination(out: str | os.PathLike, force: bool) -> Path:
    """``out`` as an absolute path, checked before any work: its parent must exist and it must not be a file or a
    non-empty folder (unless ``force``)."""
    path = Path(out).expanduser().absolute()
    if not path.parent.is_dir():
        raise DraftScopeError(f"the folder {path.parent} does not exist (create it first)")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DraftScopeError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise DraftScopeError(f"{path} is not empty; pick another --out or pass --force to replace it")
    return path


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty staging folder next to ``out``; when the block ends normally it replaces ``out`` (a previous
    folder there is removed only after the new one is complete), on any error it is deleted and ``out`` is left as
    it was."""
    check_destination(out, force)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
        check_destination(out, force)  # nothing appeared there meanwhile
        if not out.exists():
            os.replace(stage, out)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "previous")
        try:
            os.replace(stage, out)
        except BaseException:
            os.replace(old / "previous", out)  # put the previous folder back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
