"""read_ijb: the IJB meta files read as upstream reads them, joined by image name, every bad line named."""
import numpy as np
import pytest

from craft_plugin.cli import UsageError
from craft_plugin.evaluation.ijb_meta import meta_sha256, read_ijb
from craft_plugin.evaluation.synthetic import write_synthetic_ijb


@pytest.fixture
def release(tmp_path):
    write_synthetic_ijb(tmp_path, identities=3, templates_per_identity=2, media_per_template=2, max_frames=2, seed=0)
    return tmp_path


def meta_path(root, kind, t="ijbc"):
    return root / "meta" / f"{t}_{kind}.txt"


def lines(root, kind):
    return meta_path(root, kind).read_text().splitlines()


def write(root, kind, rows):
    meta_path(root, kind).write_text("\n".join(rows) + "\n")


def test_fields_are_parsed_as_upstream_parses_them(release):
    meta = read_ijb(release, "IJBC")
    rows = [line.split(" ") for line in lines(release, "name_5pts_score")]
    tid_mid = [line.split(" ") for line in lines(release, "face_tid_mid")]
    pairs = np.array([[int(v) for v in line.split(" ")] for line in lines(release, "template_pair_label")])
    assert list(meta.names) == [r[0] for r in rows]
    # upstream: np.array([float(x) ...], dtype=np.float32).reshape((5, 2)); np.array(scores).astype(np.float32)
    expected_landmarks = np.stack([np.array([float(x) for x in r[1:-1]], dtype=np.float32).reshape(5, 2) for r in rows])
    assert meta.landmarks.dtype == np.float32 and np.array_equal(meta.landmarks, expected_landmarks)
    assert meta.faceness.dtype == np.float32
    assert np.array_equal(meta.faceness, np.array([r[-1] for r in rows]).astype(np.float32))
    assert meta.templates.dtype == np.int64 and list(meta.templates) == [int(r[1]) for r in tid_mid]
    assert list(meta.medias) == [int(r[2]) for r in tid_mid]
    assert np.array_equal(meta.p1, pairs[:, 0]) and np.array_equal(meta.p2, pairs[:, 1])
    assert meta.labels.dtype == np.int8 and np.array_equal(meta.labels, pairs[:, 2])
    assert meta.target == "IJBC" and meta.image_path(0) == release / "loose_crop" / rows[0][0]


def test_template_list_is_joined_by_image_name_not_row_order(release):
    before = read_ijb(release, "IJBC")
    rows = lines(release, "face_tid_mid")
    write(release, "face_tid_mid", rows[::-1])
    after = read_ijb(release, "IJBC")
    assert np.array_equal(before.templates, after.templates) and np.array_equal(before.medias, after.medias)
    assert len(set(before.templates[:3])) >= 1 and not np.array_equal(after.templates, after.templates[::-1])


def test_meta_hash_changes_with_any_meta_file(release):
    first = meta_sha256(release, "IJBC")
    rows = lines(release, "template_pair_label")
    write(release, "template_pair_label", rows[:-1])
    assert meta_sha256(release, "IJBC") != first


@pytest.mark.parametrize("kind, edit, message", [
    ("name_5pts_score", lambda r: r[:2] + [r[2].rsplit(" ", 1)[0]] + r[3:], r"ijbc_name_5pts_score.txt:3: expected NAME x1 y1 .* \(12 fields\), got 11"),
    ("name_5pts_score", lambda r: r[:1] + [r[1].replace(" ", " x", 1)] + r[2:], r"ijbc_name_5pts_score.txt:2: landmark coordinate 'x.*' is not a number"),
    ("name_5pts_score", lambda r: r[:3] + [" ".join(r[3].split(" ")[:-1] + ["nan"])] + r[4:], r"ijbc_name_5pts_score.txt:4: faceness score 'nan' is not a finite number"),
    ("name_5pts_score", lambda r: r + [r[0]], r"ijbc_name_5pts_score.txt:\d+: image 1.jpg is listed twice \(first on line 1\)"),
    ("face_tid_mid", lambda r: r[:4] + ["5.jpg 1"] + r[5:], r"ijbc_face_tid_mid.txt:5: expected NAME TEMPLATE MEDIA \(3 fields\), got 2"),
    ("face_tid_mid", lambda r: r[:1] + ["2.jpg 1.5 1"] + r[2:], r"ijbc_face_tid_mid.txt:2: template id '1.5' is not an integer"),
    ("face_tid_mid", lambda r: r[1:], r"ijbc_name_5pts_score.txt:1: image 1.jpg has no line in ijbc_face_tid_mid.txt"),
    ("face_tid_mid", lambda r: r + ["999.jpg 1 1"], r"ijbc_face_tid_mid.txt:\d+: image 999.jpg is not in ijbc_name_5pts_score.txt"),
    ("template_pair_label", lambda r: r[:6] + ["1 2 1 0"] + r[6:], r"ijbc_template_pair_label.txt:7: expected TEMPLATE1 TEMPLATE2 LABEL \(3 fields\), got 4"),
    ("template_pair_label", lambda r: r[:1] + ["1 two 0"] + r[1:], r"ijbc_template_pair_label.txt:2: template id 'two' is not an integer"),
    ("template_pair_label", lambda r: r[:2] + ["1 2 3"] + r[2:], r"ijbc_template_pair_label.txt:3: label 3 is not 0 \(impostor\) or 1 \(genuine\)"),
    ("template_pair_label", lambda r: r[:3] + ["", "1 4242 0"] + r[3:], r"ijbc_template_pair_label.txt:5: template 4242 has no image in ijbc_face_tid_mid.txt"),
    ("template_pair_label", lambda r: [], r"ijbc_template_pair_label.txt: no pair lines"),
], ids=["landmark-fields", "landmark-number", "score-nan", "duplicate-image", "tid-fields", "tid-integer",
        "image-without-template", "template-without-image", "pair-fields", "pair-integer", "pair-label",
        "unknown-template", "no-pairs"])
def test_each_malformed_line_is_one_error_naming_file_and_line(release, kind, edit, message):
    write(release, kind, edit(lines(release, kind)))
    with pytest.raises(UsageError, match=message) as info:
        read_ijb(release, "IJBC")
    assert "\n" not in str(info.value)


def test_missing_files_and_folders_are_named(release):
    with pytest.raises(UsageError, match="--target IJBA: expected one of IJBB, IJBC"):
        read_ijb(release, "IJBA")
    with pytest.raises(UsageError, match=r"ijbb_name_5pts_score.txt: missing; an IJBB release has meta/"):
        read_ijb(release, "IJBB")
    with pytest.raises(UsageError, match="not a folder"):
        read_ijb(release / "nowhere", "IJBC")
    meta_path(release, "face_tid_mid").unlink()
    with pytest.raises(UsageError, match=r"meta/ijbc_face_tid_mid.txt: missing"):
        read_ijb(release, "IJBC")
