"""Applying, checking and reverting craft-plugin's patches on an arcface_torch checkout.

A patch is the unified diff ``craft_plugin/patches/<name>.patch`` plus the files it adds, which are
taken verbatim from this package (``ADDED_FILES``: ``plugin_hooks.py`` for the hooks patch,
``atomic_save.py`` for the compatibility patch).

A small, exact applier (no ``patch``/``git`` needed): each hunk's old lines must be found
verbatim, at the stated line or elsewhere in the file if upstream moved it, and nowhere else
twice. ``check`` reports per patch ``applicable``, ``applied`` or ``drifted`` (with the hunk that
no longer matches); ``apply`` and ``revert`` compute every file in memory first and write only
when all hunks of all patches fit, so a checkout is never left half-patched. Reverting an applied
patch restores the original bytes.
"""
from __future__ import annotations

import difflib
import os
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from craft_plugin.staged_files import replace_together

PATCH_NAMES = ("arcface_torch_hooks", "arcface_torch_compat")
# files a patch adds to the checkout, copied from this package: the hook dispatcher that the patched
# train_v2.py imports is craft_plugin/plugin_hooks.py itself, so its text exists once
ADDED_FILES = {"arcface_torch_hooks": ("plugin_hooks.py",), "arcface_torch_compat": ("atomic_save.py",)}
CHECKOUT_MARKERS = ("train_v2.py", "partial_fc_v2.py", "losses.py", "lr_scheduler.py", "configs")
HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
NEWLINE = "\n"


class PatchError(Exception):
    """The checkout cannot take (or give back) a patch; the message says why."""


@dataclass
class Hunk:
    old_start: int
    header: str
    lines: List[Tuple[str, str]] = field(default_factory=list)  # (" " | "-" | "+", text with newline)

    def side(self, keep: str) -> List[str]:
        return [text for tag, text in self.lines if tag in (" ", keep)]

    def text(self) -> str:
        return self.header + "".join(tag + text for tag, text in self.lines)


@dataclass
class FilePatch:
    path: str
    new_file: bool
    hunks: List[Hunk]


def split_lines(text: str) -> List[str]:
    """Lines with their ``\\n`` kept; unlike ``str.splitlines`` only ``\\n`` ends a line, so form
    feeds, ``\\r`` and other separators stay inside the line they belong to."""
    return LINE.findall(text)


def parse_patch(text: str) -> List[FilePatch]:
    files: List[FilePatch] = []
    lines = split_lines(text)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- "):
            new_file = line.strip() == "--- /dev/null"
            path = lines[i + 1][4:].strip()
            path = path[2:] if path.startswith("b/") else path
            files.append(FilePatch(path, new_file, []))
            i += 2
            continue
        match = HUNK_HEADER.match(line)
        if match:
            hunk = Hunk(int(match.group(1)), line)
            files[-1].hunks.append(hunk)
            i += 1
            while i < len(lines) and lines[i][:1] in (" ", "-", "+", "\\") and not lines[i].startswith("--- "):
                if lines[i].startswith("\\"):
                    tag, text = hunk.lines[-1]
                    hunk.lines[-1] = (tag, text.rstrip("\n"))
                else:
                    hunk.lines.append((lines[i][0], lines[i][1:]))
                i += 1
            continue
        i += 1
    return files


def find_block(lines: List[str], block: List[str], hint: int) -> Optional[int]:
    """Start index of ``block`` in ``lines``: at ``hint`` if it is there, else its unique place."""
    size = len(block)
    if lines[hint:hint + size] == block:
        return hint
    starts = [i for i in range(len(lines) - size + 1) if lines[i:i + size] == block]
    return starts[0] if len(starts) == 1 else None


FAIL = object()


def transform(lines: List[str], hunks: List[Hunk], remove: str, add: str) -> Tuple[object, Optional[Hunk]]:
    """``(text with each hunk's remove side replaced by its add side, None)``, or
    ``(FAIL, the first hunk that does not match)``."""
    out, pos, offset = [], 0, 0
    for hunk in hunks:
        old, new = hunk.side(remove), hunk.side(add)
        start = find_block(lines, old, max(0, hunk.old_start - 1 + offset))
        if start is None or start < pos:
            return FAIL, hunk
        out += lines[pos:start] + new
        pos = start + len(old)
        offset = start - (hunk.old_start - 1)
    return "".join(out + lines[pos:]), None


def outcomes(fp: FilePatch, current: Optional[str], reverse: bool = False
             ) -> Tuple[object, object, Optional[str], Optional[Hunk]]:
    """``(text after applying, text after reverting, why applying fails, the hunk to blame)``;
    FAIL where impossible, ``None`` text = the file does not exist. The hunk is the first that
    fails reverting (``reverse``), else the first that matches neither way."""
    if fp.new_file:
        wanted = "".join(fp.hunks[0].side("+"))
        forward = wanted if current is None else FAIL
        backward = None if current == wanted else FAIL
        why = None if current is None else f"{fp.path} already exists with other content"
        return forward, backward, why, None if current is None else fp.hunks[0]
    if current is None:
        return FAIL, FAIL, f"{fp.path} is missing", None
    lines = split_lines(current)
    forward, failed = transform(lines, fp.hunks, "-", "+")
    backward, failed_back = transform(lines, fp.hunks, "+", "-")
    if failed is None:
        return forward, backward, None, None
    # a patched file edited later fails forward at its first hunk: name the hunk that differs, the first
    # one that matches neither way (the later failure of the two directions)
    if failed_back is not None and fp.hunks.index(failed_back) > fp.hunks.index(failed):
        failed = failed_back
    return forward, backward, failed.text(), failed_back if reverse and failed_back is not None else failed


def side_start(hunk: Hunk, tag: str) -> int:
    """0-based line where the hunk's ``-`` (old) or ``+`` (new) side starts, from its header."""
    match = HUNK_HEADER.match(hunk.header)
    return max(0, int(match.group(1) if tag == "-" else match.group(3)) - 1)


def _alike(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _place(lines: List[str], fp: FilePatch, hunk: Hunk, tag: str) -> Tuple[int, int, int, int]:
    """``(lines in place, start, low, high)``: where ``hunk``'s side ``tag`` fits ``lines`` best,
    between the neighbouring hunks that are found (``[low, high)``): the most lines in place, then
    the most alike, then the closest to its stated line moved as the hunk before it moved."""
    low, high, offset = 0, len(lines), 0
    index = fp.hunks.index(hunk)
    for other in fp.hunks[:index]:
        found = find_block(lines, other.side(tag), max(0, side_start(other, tag) + offset))
        if found is not None and found >= low:
            low, offset = found + len(other.side(tag)), found - side_start(other, tag)
    for other in fp.hunks[index + 1:]:
        found = find_block(lines, other.side(tag), max(0, side_start(other, tag) + offset))
        if found is not None and found >= low:
            high = found
            break
    block, hint = hunk.side(tag), side_start(hunk, tag) + offset
    best = None
    for begin in range(low, max(low + 1, high - len(block) + 1)):
        here = lines[begin:begin + len(block)]
        same = sum(a == b for a, b in zip(here, block))
        alike = sum(_alike(a, b) for a, b in zip(here, block))
        key = (same, round(alike, 6), -abs(begin - hint))
        if best is None or key > best[0]:
            best = (key, begin)
    return best[0][0], best[1], low, high


def differing_line(fp: FilePatch, hunk: Hunk, current: str, prefer: str = "+") -> Tuple[int, str]:
    """``(0-based line, description)`` of where ``current`` (a file that fits ``hunk`` neither
    way) departs from the side of the hunk it is closest to (``prefer`` when both are as close)."""
    lines = split_lines(current)
    words = {"+": "the patched file has", "-": "the unpatched file has"}
    candidates = []
    for tag in ("+",) if fp.new_file else ("+", "-"):
        _, start, low, high = _place(lines, fp, hunk, tag)
        block = hunk.side(tag)
        window_low = max(low, start - len(block))
        window = lines[window_low:min(high, start + 2 * len(block))]
        matcher = difflib.SequenceMatcher(None, block, window, autojunk=False)
        kept = sum(size for _, _, size in matcher.get_matching_blocks())
        candidates.append(((kept, tag == prefer), tag, block, window_low, window, start, matcher))
    _, tag, block, window_low, window, start, matcher = max(candidates, key=lambda c: c[0])
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal" or (op == "insert" and i1 in (0, len(block))):
            continue  # in step, or file lines before / after the hunk's place
        if op == "replace":  # of the file lines replacing the hunk's, the one most like its first
            j1 = max(range(j1, j2), key=lambda j: (_alike(window[j], block[i1]), -j))
        expected = block[i1].rstrip(NEWLINE) if i1 < len(block) else "(the end of the hunk)"
        at = window_low + j1
        if op == "delete":
            return at, f"before line {at + 1} the line {expected!r} is missing ({words[tag]} it)"
        if at < len(lines):
            return at, f"line {at + 1} holds {lines[at].rstrip(NEWLINE)!r} where {words[tag]} {expected!r}"
        return at, f"line {at + 1} is past the end of the file, where {words[tag]} {expected!r}"
    return start, f"line {start + 1}: the hunk's lines are there, but at more than one place"


def line_on_disk(seen: str, disk: str, index: int) -> int:
    """Line ``index`` of ``seen`` (a file as an earlier patch's revert left it in memory) as a line
    of ``disk``: the two differ only in that patch's hunks."""
    a, b = split_lines(seen), split_lines(disk)
    for i, j, size in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        if i <= index < i + size:
            return j + index - i
        if i > index:
            return j
    return len(b)


@dataclass
class PatchState:
    name: str
    state: str                      # "applicable" | "applied" | "drifted"
    files: List[str]
    failing_file: Optional[str] = None
    failing_hunk: Optional[str] = None
    failing_line: Optional[str] = None  # in failing_file: "line N holds ... where ... has ..."
    results: Dict[str, Optional[str]] = field(default_factory=dict)  # path -> new text (None = delete)


def added_file(path: str, text: str) -> FilePatch:
    """The new-file patch that creates ``path`` holding ``text``."""
    lines = split_lines(text)
    return FilePatch(path, True, [Hunk(0, f"@@ -0,0 +1,{len(lines)} @@\n", [("+", line) for line in lines])])


def load_patch(name: str) -> List[FilePatch]:
    """Patch ``name``: the files it adds, taken from this package, then its ``.patch`` file."""
    package = resources.files("craft_plugin")
    added = [added_file(path, (package / path).read_text(encoding="utf-8")) for path in ADDED_FILES.get(name, ())]
    return added + parse_patch((package / "patches" / f"{name}.patch").read_text(encoding="utf-8"))


def check_checkout(root: Path) -> None:
    missing = [m for m in CHECKOUT_MARKERS if not (root / m).exists()]
    if missing:
        raise PatchError(f"{root} is not an arcface_torch checkout (recognition/arcface_torch): "
                         f"missing {', '.join(missing)}")


def plan(root: Path, name: str, files: Dict[str, Optional[str]], reverse: bool = False) -> PatchState:
    """State of patch ``name`` against ``files`` (current texts, as left by earlier patches) and
    the texts that applying it (or reverting it, when ``reverse``) would produce."""
    patch = load_patch(name)
    forward, backward = {}, {}
    state = PatchState(name, "drifted", [fp.path for fp in patch])
    reasons, blamed = {}, {}
    for fp in patch:
        if fp.path not in files:
            path = root / fp.path
            files[fp.path] = path.read_bytes().decode("utf-8", "surrogateescape") if path.exists() else None
        forward[fp.path], backward[fp.path], reasons[fp.path], hunk = outcomes(fp, files[fp.path], reverse)
        blamed[fp.path] = (fp, hunk)
    # blame a file that fits neither way; if every file fits one way or the other, the patch is half
    # applied: blame the files not in the patched state
    neither = [p for p in forward if forward[p] is FAIL and backward[p] is FAIL]
    if neither:
        state.failing_file, state.failing_hunk = neither[0], reasons[neither[0]]
        fp, hunk = blamed[neither[0]]
        if hunk is not None:
            index, words = differing_line(fp, hunk, files[neither[0]], "+" if reverse else "-")
            disk = root / neither[0]
            disk = disk.read_bytes().decode("utf-8", "surrogateescape") if disk.exists() else files[neither[0]]
            moved = line_on_disk(files[neither[0]], disk, index)  # as the user's file numbers it
            state.failing_line = words.replace(f"line {index + 1}", f"line {moved + 1}", 1)
    else:
        unpatched = [p for p in forward if backward[p] is FAIL]
        patched = [p for p in forward if forward[p] is FAIL]
        if unpatched and patched:
            state.failing_file = unpatched[0]
            state.failing_hunk = (f"{unpatched[0]} is {'missing' if files[unpatched[0]] is None else 'not patched'} "
                                  f"while {', '.join(patched)} {'is' if len(patched) == 1 else 'are'} patched "
                                  f"(the patch is half applied)")
    if all(v is not FAIL for v in forward.values()):
        state.state, state.failing_file, state.failing_hunk, state.failing_line = "applicable", None, None, None
        state.results = {} if reverse else forward
    elif all(v is not FAIL for v in backward.values()):
        state.state, state.failing_file, state.failing_hunk, state.failing_line = "applied", None, None, None
        state.results = backward if reverse else {}
    return state


def check(root) -> List[PatchState]:
    root = Path(root)
    check_checkout(root)
    files: Dict[str, Optional[str]] = {}
    states = []
    for name in PATCH_NAMES:
        state = plan(root, name, files)
        states.append(state)
        files.update({k: v for k, v in state.results.items()})
    return states


def check_writable(root: Path, results: Dict[str, Optional[str]]) -> None:
    """Refuse, before anything is staged, when a folder that gets a new, replaced or deleted file is
    not writable (a read-only checkout or sub-folder); the message names the folder."""
    for rel in results:
        folder = (root / rel).parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PatchError(f"{folder}: not writable, so {rel} cannot be changed; nothing was written")


def write_all(root: Path, results: Dict[str, Optional[str]]) -> None:
    """Write every new text to a temporary file beside its target (keeping the target's mode), then
    move them all into place, so a failure while writing leaves every original file untouched and
    no temporary file behind."""
    check_writable(root, results)
    with replace_together() as staged:
        for rel, text in results.items():
            path = root / rel
            if text is None:
                continue
            tmp = path.with_name(path.name + ".craft-tmp")
            staged.append((tmp, path))
            tmp.write_bytes(text.encode("utf-8", "surrogateescape"))
            if path.exists():
                shutil.copymode(path, tmp)
    for rel, text in results.items():
        if text is None:
            (root / rel).unlink()


def apply(root) -> List[Tuple[str, str]]:
    """Apply every patch not yet applied; returns ``(patch, "applied" | "already applied")``."""
    root = Path(root)
    states = check(root)
    drifted = [s for s in states if s.state == "drifted"]
    if drifted:
        s = drifted[0]
        raise PatchError(f"{s.name}.patch does not fit {root / (s.failing_file or '')}"
                         f"{', ' + s.failing_line if s.failing_line else ''}: upstream "
                         f"drifted; this hunk no longer matches:\n{s.failing_hunk}")
    results: Dict[str, Optional[str]] = {}
    for s in states:
        results.update(s.results)
    write_all(root, results)
    return [(s.name, "applied" if s.state == "applicable" else "already applied") for s in states]


def refusal(root: Path, state: PatchState, what: str) -> str:
    """One line: ``<patch> <what>: <file>, line N holds ... where ... has ...; undo ...``; or the
    half-applied reason, which names its files."""
    if state.failing_line is None:
        return f"{state.name}.patch {what}: {state.failing_hunk}"
    return (f"{state.name}.patch {what}: {root / state.failing_file}, {state.failing_line}; undo that edit "
            "(or restore the file from upstream) and run it again")


def revert(root) -> List[Tuple[str, str]]:
    """Undo every applied patch (last first); returns ``(patch, "reverted" | "not applied")``."""
    root = Path(root)
    check_checkout(root)
    files: Dict[str, Optional[str]] = {}
    outcome, results = [], {}
    for name in reversed(PATCH_NAMES):
        state = plan(root, name, files, reverse=True)
        if state.state == "drifted":
            raise PatchError(refusal(root, state, "cannot be reverted"))
        files.update(state.results)
        results.update(state.results)
        outcome.append((name, "reverted" if state.state == "applied" else "not applied"))
    write_all(root, results)
    return outcome[::-1]
