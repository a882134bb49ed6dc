"""All-or-nothing replacement of several files.

Inside ``with replace_together() as staged:`` the caller writes each new file to a temporary path
beside its target and appends ``(tmp, target)`` to ``staged``. When the block completes every
temporary file is moved over its target with ``os.replace``; if the block raises, no target is
touched. Either way no temporary file is left behind.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Tuple


@contextmanager
def replace_together() -> Iterator[List[Tuple[Path, Path]]]:
    staged: List[Tuple[Path, Path]] = []
    try:
        yield staged
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()
