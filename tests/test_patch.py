"""The hook and compatibility patches: apply, check, drift, revert, atomicity, and that the
hook calls they add are the ones the replica (craft_plugin/_replica) makes. Upstream is not available in CI: the
tests build a stand-in checkout from the patches' own context and removed lines."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

import craft_plugin._replica.train
import craft_plugin.patching
from craft_plugin import plugin_hooks
from craft_plugin.cli import main
from craft_plugin.patching import PATCH_NAMES, CHECKOUT_MARKERS, PatchError, apply, check, load_patch, revert


def stand_in_checkout(root: Path) -> Path:
    """Files holding each hunk's old side at its stated line, filler lines in between; hunks of
    several patches on one file (train_v2.py) are merged in line order."""
    hunks = {}
    for name in PATCH_NAMES:
        for fp in load_patch(name):
            if not fp.new_file:
                hunks.setdefault(fp.path, []).extend(fp.hunks)
    for rel, file_hunks in hunks.items():
        lines = []
        for hunk in sorted(file_hunks, key=lambda h: h.old_start):
            while len(lines) < hunk.old_start - 1:
                lines.append(f"# upstream line {len(lines) + 1}\n")
            lines += hunk.side("-")
        lines.append("# end of file\n")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
    for marker in CHECKOUT_MARKERS:
        target = root / marker
        if not target.exists():
            target.mkdir() if "." not in marker else target.write_text("# stand-in\n")
    return root


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def states(root):
    return {s.name: s.state for s in check(root)}


def test_apply_check_reapply_revert_cycle(tmp_path, capsys):
    root = stand_in_checkout(tmp_path)
    original = digest(root)
    assert states(root) == {n: "applicable" for n in PATCH_NAMES}
    assert main(["patch", str(root)]) == 0
    assert states(root) == {n: "applied" for n in PATCH_NAMES}
    assert (root / "plugin_hooks.py").read_text() == Path(plugin_hooks.__file__).read_text()
    patched = digest(root)
    assert main(["patch", str(root)]) == 0
    assert "already applied: nothing to do" in capsys.readouterr().out
    assert digest(root) == patched
    assert main(["patch", "--revert", str(root)]) == 0
    assert digest(root) == original
    assert main(["patch", str(root)]) == 0 and digest(root) == patched


def test_check_json_and_drift_reports_the_hunk(tmp_path, capsys):
    root = stand_in_checkout(tmp_path)
    train = root / "train_v2.py"
    train.write_text(train.read_text().replace("    cfg = get_config(args.config)\n", "    cfg = load(args.config)\n"))
    assert main(["patch", "--check", "--json", str(root)]) == 1
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    hooks = report["patches"]["arcface_torch_hooks"]
    assert hooks["state"] == "drifted" and hooks["failing_file"] == "train_v2.py"
    assert "cfg = get_config(args.config)" in hooks["failing_hunk"]
    assert report["patches"]["arcface_torch_compat"]["state"] == "applicable"
    before = digest(root)
    with pytest.raises(PatchError, match="upstream drifted"):
        apply(root)
    assert digest(root) == before  # nothing written, not even the applicable compat patch


def test_moved_upstream_code_still_applies(tmp_path):
    root = stand_in_checkout(tmp_path)
    train = root / "train_v2.py"
    train.write_text("# a new upstream line\n" * 7 + train.read_text())
    assert states(root)["arcface_torch_hooks"] == "applicable"
    apply(root)
    revert(root)
    assert train.read_text().startswith("# a new upstream line\n")


def test_refuses_a_folder_that_is_not_a_checkout(tmp_path, capsys):
    (tmp_path / "train_v2.py").write_text("")
    assert main(["patch", str(tmp_path)]) == 2
    assert "not an arcface_torch checkout" in capsys.readouterr().err
    assert "partial_fc_v2.py" in str(pytest.raises(PatchError, check, tmp_path).value)


def test_partly_applied_checkout_is_drifted(tmp_path):
    root = stand_in_checkout(tmp_path)
    apply(root)
    (root / "plugin_hooks.py").unlink()
    assert states(root)["arcface_torch_hooks"] == "drifted"


CALL = re.compile(r'plugin_(filter|hook)\(\s*"(\w+)"([^()]*)\)', re.S)


def hook_calls_in(source: str) -> set:
    """``(kind, hook name, keyword names)`` of every hook call in ``source`` (``plugins=`` aside)."""
    return {(kind, name, tuple(sorted(set(re.findall(r"(\w+)=", args)) - {"plugins"})))
            for kind, name, args in CALL.findall(source)}


def test_patch_adds_exactly_the_mini_pipelines_hook_calls():
    added = "".join(text for fp in load_patch("arcface_torch_hooks") if fp.path == "train_v2.py"
                    for hunk in fp.hunks for tag, text in hunk.lines if tag == "+")
    patch_calls = hook_calls_in(added)
    assert len(patch_calls) == 11
    assert patch_calls == hook_calls_in(Path(craft_plugin._replica.train.__file__).read_text())


def test_patches_are_package_files_and_the_dispatcher_text_exists_once():
    """The .patch files are regular files inside the package; the hooks patch adds plugin_hooks.py
    from the module itself, and its .patch file does not restate it."""
    folder = Path(craft_plugin.patching.__file__).parent / "patches"
    assert not folder.is_symlink()
    for name in PATCH_NAMES:
        assert (folder / f"{name}.patch").is_file() and not (folder / f"{name}.patch").is_symlink()
    assert "plugin_hooks.py" not in (folder / "arcface_torch_hooks.patch").read_text()
    added = [fp for fp in load_patch("arcface_torch_hooks") if fp.new_file]
    assert [fp.path for fp in added] == ["plugin_hooks.py"]
    assert "".join(added[0].hunks[0].side("+")) == Path(plugin_hooks.__file__).read_text()


def test_patch_budget():
    train_added = sum(1 for fp in load_patch("arcface_torch_hooks") if fp.path == "train_v2.py"
                      for hunk in fp.hunks for tag, _ in hunk.lines if tag == "+")
    assert train_added <= 30


def test_bytes_outside_the_hunks_survive_apply_and_revert(tmp_path):
    """Non-UTF-8 bytes, a form feed and a CRLF line are kept exactly, and the file mode too."""
    root = stand_in_checkout(tmp_path)
    dataset = root / "dataset.py"
    odd = b"# caf\xe9 \x0c page\r\n"
    dataset.write_bytes(odd + dataset.read_bytes() + odd)
    dataset.chmod(0o755)
    original = digest(root)
    apply(root)
    assert dataset.read_bytes().startswith(odd) and dataset.read_bytes().endswith(odd)
    assert dataset.stat().st_mode & 0o777 == 0o755
    assert states(root) == {n: "applied" for n in PATCH_NAMES}
    revert(root)
    assert digest(root) == original


def test_a_plugin_that_fails_to_import_is_skipped_only_when_optional(monkeypatch, caplog):
    class BrokenEntryPoint:
        name = "broken"
        value = "broken_plugin:module"

        def load(self):
            raise AttributeError("module 'numpy' has no attribute 'bool'")

    class EntryPoints:
        def select(self, group):
            return [BrokenEntryPoint()] if group == "arcface_torch.plugins" else []

    monkeypatch.setattr(plugin_hooks.importlib.metadata, "entry_points", lambda: EntryPoints())
    monkeypatch.delenv(plugin_hooks.OPTIONAL_ENV, raising=False)
    with pytest.raises(ImportError, match="plugin 'broken' .* AttributeError: module 'numpy'"):
        plugin_hooks.load_plugins()
    monkeypatch.setenv(plugin_hooks.OPTIONAL_ENV, "1")
    assert plugin_hooks.load_plugins() == []
    assert "arcface_torch plugin 'broken' (broken_plugin:module) cannot be imported" in caplog.text
    assert plugin_hooks.plugin_filter("config", "cfg", plugins=[]) == "cfg"
