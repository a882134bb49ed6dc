"""Five-point face alignment to arcface's 112x112 template, as arcface_torch's ``eval_ijbc.py`` does it.

The similarity transform ``x -> s R x + t`` that maps the five detected landmarks onto the template
in the least-squares sense is Umeyama's closed form (S. Umeyama, "Least-squares estimation of
transformation parameters between two point patterns", PAMI 1991): with centred point sets
``X`` (landmarks) and ``Y`` (template), ``A = Y^T X / n`` and ``A = U diag(S) V``,

    R = U diag(d) V,    s = (S . d) / sum(var(X)),    t = mean(Y) - s R mean(X),

where ``d = (1, sign)`` turns a reflection into a rotation (Eq. 39-43). Upstream computes it with
scikit-image's ``SimilarityTransform.estimate`` on float32 landmarks and a float32 template, so the
means, ``A`` and its SVD are float32 and only the assembled matrix is float64; this module does the
same operations in the same dtypes (a float64 computation moves IJB pair scores by ~1.5e-4). The
crop is then ``cv2.warpAffine(image, M, (112, 112), borderValue=0)`` and converted BGR -> RGB.
"""
from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = (112, 112)   # (H, W) of arcface_torch's training crops

# arcface's 96x112 five-point template, shifted by 8 px to the 112x112 crop in float32 as upstream
ARCFACE_TEMPLATE = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                             [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float32)
ARCFACE_TEMPLATE[:, 0] += np.float32(8.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (3, 3) float64 homogeneous similarity mapping ``src`` (n, 2) onto ``dst`` (n, 2) in the
    least-squares sense (Umeyama), computed in the inputs' dtype as scikit-image does; all NaN when
    ``src`` or ``dst`` has collapsed to a point."""
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n                           # A, Eq. (38)
    signs = np.ones((dim,), dtype=np.float64)           # d, Eq. (39)
    if np.linalg.det(cov) < 0:
        signs[-1] = -1
    u, singular, v = np.linalg.svd(cov)
    matrix = np.eye(dim + 1, dtype=np.float64)
    tolerance = singular.max() * max(cov.shape) * np.finfo(float).eps
    rank = int(np.count_nonzero(singular > tolerance))
    if rank == 0:
        return matrix * np.nan
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(v) > 0:
        matrix[:dim, :dim] = u @ v                      # Eq. (43): degenerate, already a rotation
    elif rank == dim - 1:
        degenerate = signs.copy()
        degenerate[-1] = -1
        matrix[:dim, :dim] = u @ np.diag(degenerate) @ v
    else:
        matrix[:dim, :dim] = u @ np.diag(signs) @ v     # Eq. (40)
    scale = 1.0 / src_c.var(axis=0).sum() * (singular @ signs)  # Eq. (41), (42)
    matrix[:dim, dim] = dst_mean - scale * (matrix[:dim, :dim] @ src_mean.T)
    matrix[:dim, :dim] *= scale
    return matrix


def alignment_matrix(landmarks: np.ndarray) -> np.ndarray:
    """The (2, 3) float64 affine matrix taking five float32 crop landmarks to the template."""
    return similarity_transform(np.asarray(landmarks, dtype=np.float32), ARCFACE_TEMPLATE)[:2, :]


def align_face(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A decoded BGR crop and its five landmarks -> the aligned 112x112 RGB uint8 face (HWC)."""
    matrix = alignment_matrix(landmarks)
    if not np.isfinite(matrix).all():
        raise ValueError("the five landmarks coincide: no similarity transform maps them to the template")
    warped = cv2.warpAffine(bgr, matrix, (ALIGNED_SIZE[1], ALIGNED_SIZE[0]), borderValue=0.0)
    return cv2.cvtColor(warped, cv2.COLOR_BGR2RGB)
