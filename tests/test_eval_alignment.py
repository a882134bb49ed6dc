"""Five-point alignment: against a closed-form least-squares similarity (float64, tolerance), bit for bit
against an Umeyama in float32 written here as scikit-image computes it, and on synthetic crops whose
placement is known."""
import cv2
import numpy as np
import pytest

from craft_plugin.evaluation.alignment import ARCFACE_TEMPLATE, align_face, alignment_matrix
from craft_plugin.evaluation.ijb_meta import read_ijb
from craft_plugin.evaluation.synthetic import identity_pattern, write_synthetic_ijb

TEMPLATE_96x112 = [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]]


def least_squares_similarity(src, dst):
    """argmin over (a, b, t) of sum |[[a, -b], [b, a]] x + t - y|^2, in complex numbers: with centred
    points, a + ib = sum(conj(x) y) / sum |x|^2 (a rotation and scale, no reflection)."""
    x = src[:, 0].astype(np.float64) + 1j * src[:, 1]
    y = dst[:, 0].astype(np.float64) + 1j * dst[:, 1]
    xc, yc = x - x.mean(), y - y.mean()
    z = np.sum(np.conj(xc) * yc) / np.sum(np.abs(xc) ** 2)
    t = y.mean() - z * x.mean()
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]])


def umeyama_float32_reference(src, dst):
    """Umeyama's estimate with scikit-image's operation order and dtypes: float32 means, covariance
    and SVD; float64 signs and output matrix (non-degenerate case)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a = (dst - dst_mean).T @ (src - src_mean) / src.shape[0]
    d = np.ones(2)
    if np.linalg.det(a) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(a)
    out = np.eye(3)
    out[:2, :2] = u @ np.diag(d) @ vt
    scale = 1.0 / (src - src_mean).var(axis=0).sum() * (s @ d)
    out[:2, 2] = dst_mean - scale * (out[:2, :2] @ src_mean.T)
    out[:2, :2] *= scale
    return out[:2]


def random_landmarks(rng, n):
    out = []
    for _ in range(n):
        angle = rng.uniform(-0.6, 0.6)
        rot = rng.uniform(0.4, 3.0) * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = np.array(TEMPLATE_96x112) @ rot.T + rng.uniform(-30, 200, 2) + rng.normal(0, 4, (5, 2))
        out.append(points.astype(np.float32))
    return out


def test_template_is_upstreams_float32_shift():
    expected = np.array(TEMPLATE_96x112, dtype=np.float32)
    expected[:, 0] = expected[:, 0] + np.float32(8.0)
    assert ARCFACE_TEMPLATE.dtype == np.float32 and np.array_equal(ARCFACE_TEMPLATE, expected)


def test_matches_the_closed_form_least_squares_similarity():
    rng = np.random.default_rng(0)
    for landmarks in random_landmarks(rng, 200):
        ours = alignment_matrix(landmarks)
        exact = least_squares_similarity(landmarks, ARCFACE_TEMPLATE)
        # float32 SVD: relative error ~1e-6 of the matrix entries (translation ~ 100 px)
        assert np.allclose(ours[:, :2], exact[:, :2], rtol=0, atol=2e-5 * np.abs(exact[:, :2]).max())
        assert np.allclose(ours[:, 2], exact[:, 2], rtol=0, atol=2e-3)
        # and it really is a least-squares fit: moving any entry raises the residual
        def residual(m):
            return np.sum((landmarks @ m[:, :2].T + m[:, 2] - ARCFACE_TEMPLATE) ** 2)
        assert residual(exact) <= residual(ours) + 1e-3


def test_is_bit_identical_to_float32_umeyama():
    rng = np.random.default_rng(1)
    for landmarks in random_landmarks(rng, 500):
        ours = alignment_matrix(landmarks)
        assert ours.dtype == np.float64
        assert np.array_equal(ours, umeyama_float32_reference(landmarks, ARCFACE_TEMPLATE))
    # and the float64 computation is measurably different (why the dtypes matter)
    landmarks = random_landmarks(rng, 1)[0]
    float64 = umeyama_float32_reference(landmarks.astype(np.float64), ARCFACE_TEMPLATE.astype(np.float64))
    assert not np.array_equal(alignment_matrix(landmarks), float64)


def test_a_mirrored_face_is_rotated_not_reflected():
    landmarks = ARCFACE_TEMPLATE.copy()
    landmarks[:, 0] = 112 - landmarks[:, 0]          # left and right swapped: a reflection fits exactly
    m = alignment_matrix(landmarks)
    assert np.linalg.det(m[:, :2]) > 0
    assert np.array_equal(m, umeyama_float32_reference(landmarks, ARCFACE_TEMPLATE))


def test_template_landmarks_give_the_identity_and_warp_is_bgr_to_rgb():
    m = alignment_matrix(ARCFACE_TEMPLATE)
    assert np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-5)
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    out = align_face(bgr, ARCFACE_TEMPLATE)
    expected = cv2.cvtColor(cv2.warpAffine(bgr, m, (112, 112), borderValue=0.0), cv2.COLOR_BGR2RGB)
    assert out.shape == (112, 112, 3) and np.array_equal(out, expected)
    assert np.abs(out.astype(int) - bgr[:, :, ::-1]).mean() < 1.0


def test_coincident_landmarks_are_refused():
    with pytest.raises(ValueError, match="coincide"):
        align_face(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), 7.0, np.float32))


def test_synthetic_crops_align_back_to_their_identity(tmp_path):
    write_synthetic_ijb(tmp_path, identities=2, templates_per_identity=2, media_per_template=1, max_frames=2, seed=3)
    meta = read_ijb(tmp_path, "IJBC")
    patterns = [identity_pattern(3, subject) for subject in range(2)]
    subject_of_template = {1: 0, 2: 0, 3: 1, 4: 1}
    for i, name in enumerate(meta.names):
        aligned = align_face(cv2.imread(str(tmp_path / "loose_crop" / name)), meta.landmarks[i]).astype(float)
        # brightness varies by media: compare by correlation, inside the border the warp leaves
        match = [np.corrcoef(aligned[8:-8, 8:-8].ravel(), p[8:-8, 8:-8].ravel())[0, 1] for p in patterns]
        own = subject_of_template[int(meta.templates[i])]
        assert match[own] > 0.95 and match[own] > match[1 - own] + 0.3, (name, match)
