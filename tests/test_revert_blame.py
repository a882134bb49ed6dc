"""`patch --revert` names the user's file and the line that stops it: an edit (changed, inserted
or deleted line) inside a hunk of every file either patch touches, and inside each added file.
The checkout is tests/test_patch.py's stand-in."""
from __future__ import annotations

import pytest

from craft_plugin.cli import main
from craft_plugin.patching import PATCH_NAMES, PatchError, apply, load_patch, revert, split_lines
from test_patch import digest, stand_in_checkout

TOUCHED = [(name, fp.path) for name in PATCH_NAMES for fp in load_patch(name)]


def test_every_patched_file_is_covered():
    files = {path for _, path in TOUCHED}
    assert {"train_v2.py", "dataset.py", "eval/verification.py", "lr_scheduler.py", "plugin_hooks.py",
            "atomic_save.py"} <= files
    assert len([1 for name, _ in TOUCHED if name == "arcface_torch_compat"]) == 5  # four files + atomic_save.py


def patched_line_of(name, rel, lines, edit):
    """Index in the patched file of a line to edit, unique in the file so the blame cannot point
    elsewhere: a line the patch added ("change"; "delete": one that follows a line of its hunk,
    so that its absence shows), or any line of a hunk after its first ("insert": before it, inside
    the hunk). None where the patch has no such line (a hunk without context has no inside)."""
    fp = next(f for f in load_patch(name) if f.path == rel)
    for hunk in fp.hunks[len(fp.hunks) // 2:] + fp.hunks:
        kept = [(tag, text) for tag, text in hunk.lines if tag != "-"]
        for k, (tag, text) in enumerate(kept):
            wanted = {"change": tag == "+", "delete": tag == "+" and k > 0, "insert": k > 0}[edit]
            if wanted and text.strip() and lines.count(text) == 1:
                return lines.index(text)
    return None


def patched_lines(tmp_path):
    root = stand_in_checkout(tmp_path / "probe")
    apply(root)
    return {rel: split_lines((root / rel).read_text()) for _, rel in TOUCHED}


NO_INSIDE = ("arcface_torch_compat", "train_v2.py", "delete")  # one-line hunks without context lines
CASES = [(name, rel, edit) for edit in ("change", "insert", "delete") for name, rel in TOUCHED
         if (name, rel, edit) != NO_INSIDE]


def test_every_file_has_a_changed_line_and_every_hunk_with_context_an_inside(tmp_path):
    lines = patched_lines(tmp_path)
    for name, rel in TOUCHED:
        assert patched_line_of(name, rel, lines[rel], "change") is not None, rel
        assert patched_line_of(name, rel, lines[rel], "insert") is not None, rel
        assert (patched_line_of(name, rel, lines[rel], "delete") is None) == ((name, rel, "delete") == NO_INSIDE)


@pytest.mark.parametrize("name,rel,edit", CASES, ids=[f"{n}:{p}-{e}" for n, p, e in CASES])
def test_revert_names_the_file_and_the_edited_line(tmp_path, capsys, name, rel, edit):
    root = stand_in_checkout(tmp_path)
    apply(root)
    path = root / rel
    lines = split_lines(path.read_text())
    at = patched_line_of(name, rel, lines, edit)
    if edit == "change":
        lines[at] = lines[at].rstrip("\n") + "  # my change\n"
    elif edit == "insert":
        lines.insert(at, "print('my line')\n")
    else:
        del lines[at]
    path.write_text("".join(lines))
    before = digest(root)
    with pytest.raises(PatchError) as refused:
        revert(root)
    message = str(refused.value)
    where = f"before line {at + 1} the line " if edit == "delete" else f"line {at + 1} holds "
    assert message.startswith(f"{name}.patch cannot be reverted: {path}, {where}"), message
    shown = {"change": "# my change", "insert": "print('my line')", "delete": "is missing"}
    assert shown[edit] in message and len(message.splitlines()) == 1
    assert main(["patch", str(root), "--revert"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"craft-plugin patch: {message}" and "Traceback" not in err
    assert digest(root) == before  # nothing written
