"""Issue 11: patch faults. A read-only target is refused before anything is staged (exit 2, one
line naming the folder); staged files never outlive a failed write; refusals name the file and the
hunk that actually differ. The checkout is the stand-in that tests/test_patch.py builds (upstream
is not available in CI)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import craft_plugin.patching as patching
from craft_plugin.cli import main
from craft_plugin.patching import PatchError, apply, check, revert
from test_patch import digest, stand_in_checkout


def read_only(monkeypatch, folder: Path) -> None:
    """``folder`` refuses writes as a read-only mount would; os.access reports it (also as root, for
    whom chmod does not stop writes), and creating a file there raises PermissionError."""
    folder = folder.resolve()
    real_access, real_open = os.access, os.open

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def opener(path, flags, *args, **kwargs):
        if Path(path).resolve().parent == folder and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(patching.os, "access", access)
    monkeypatch.setattr(os, "open", opener)


@pytest.mark.parametrize("where", [".", "eval"])
def test_read_only_target_is_refused_before_staging(tmp_path, monkeypatch, capsys, where):
    root = stand_in_checkout(tmp_path)
    before = digest(root)
    read_only(monkeypatch, root / where)
    assert main(["patch", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{root / where}: not writable" in err  # pathlib drops the "." of root / "."
    assert digest(root) == before  # nothing staged, nothing written


def test_a_write_failing_half_way_leaves_no_staged_file(tmp_path, monkeypatch):
    """The first check cannot see every failure (a full disk, a file-level lock): when a later file's
    staging fails, the earlier staged files are removed and no target changes."""
    root = stand_in_checkout(tmp_path)
    before = digest(root)
    real_write = Path.write_bytes

    def write_bytes(self, data):
        if self.parent.name == "eval":
            raise OSError(28, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError, match="No space left"):
        apply(root)
    assert digest(root) == before
    assert not list(root.rglob("*.craft-tmp"))


def edit_a_patched_line(root: Path) -> str:
    """Change the line the on_save_checkpoint hunk added; returns that hunk's header."""
    train = root / "train_v2.py"
    text = train.read_text()
    line = '            plugin_hook("on_save_checkpoint", checkpoint=checkpoint)\n'
    assert text.count(line) == 1
    train.write_text(text.replace(line, '            plugin_hook("on_save_checkpoint", checkpoint=checkpoint)  # mine\n'))
    return next(h.header for fp in patching.load_patch("arcface_torch_hooks") for h in fp.hunks
                if "on_save_checkpoint" in h.text())


def test_an_edited_patched_line_blames_its_file_and_hunk(tmp_path):
    root = stand_in_checkout(tmp_path)
    apply(root)
    header = edit_a_patched_line(root)
    hooks = {s.name: s for s in check(root)}["arcface_torch_hooks"]
    assert hooks.state == "drifted" and hooks.failing_file == "train_v2.py"
    assert hooks.failing_hunk.startswith(header)
    with pytest.raises(PatchError) as refused:
        revert(root)
    assert "on_save_checkpoint" in str(refused.value) and "plugin_hooks.py" not in str(refused.value)


def test_a_deleted_added_file_is_named(tmp_path):
    root = stand_in_checkout(tmp_path)
    apply(root)
    (root / "plugin_hooks.py").unlink()
    hooks = {s.name: s for s in check(root)}["arcface_torch_hooks"]
    assert hooks.state == "drifted" and hooks.failing_file == "plugin_hooks.py"
    assert hooks.failing_hunk == "plugin_hooks.py is missing while train_v2.py is patched (the patch is half applied)"
    with pytest.raises(PatchError, match="plugin_hooks.py is missing"):
        revert(root)
