"""A small synthetic dataset in the IJB release layout, for tests, benchmarks and demos.

Each identity is a smooth random colour pattern (the demo's synthetic identities, so that its
models see the image family they were trained on) drawn in arcface's 112x112 template frame, with
dark marks on the five template landmarks. An image of an identity is that pattern placed in a loose crop
through a known similarity transform (scale, rotation, shift), with a per-media brightness change
and per-frame pixel noise; its five landmarks are the template points mapped by the same transform
(plus sub-pixel jitter), in crop coordinates, so aligning the crop recovers the pattern. Templates
hold several media, a media one frame (a still) or several (a video), and the 1:1 list holds every
genuine template pair and impostor pairs. The 1:N lists split the identities into two disjoint
galleries (one template each) and probe every other template ("mixed" probes).

Written files, for ``t`` = ``ijbb`` / ``ijbc``: ``loose_crop/<k>.jpg``, ``meta/<t>_name_5pts_score.txt``,
``meta/<t>_face_tid_mid.txt``, ``meta/<t>_template_pair_label.txt`` and, with ``one_to_n``,
``meta/<t>_1N_gallery_G1.csv``, ``_G2.csv`` (``_S1``/``_S2`` for IJB-B, as in its release) and
``meta/<t>_1N_probe_mixed.csv`` with the release's leading columns ``TEMPLATE_ID,SUBJECT_ID,FILENAME``.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from craft_plugin._replica.synthetic import identity_pattern as smooth_pattern
from craft_plugin.evaluation.alignment import ALIGNED_SIZE, ARCFACE_TEMPLATE
from craft_plugin.evaluation.identification import list_files

SUBJECT_OFFSET = 1_000_000   # synthetic IJB subjects are identities >= this of the demo's generator


def identity_pattern(seed: int, subject: int) -> np.ndarray:
    """Subject ``subject``'s RGB uint8 pattern in the aligned 112x112 frame: the demo's synthetic
    identity pattern (the image family its models train on; subjects are counted from
    ``SUBJECT_OFFSET`` so that they are never training identities), landmarks marked dark."""
    pattern = smooth_pattern(seed, SUBJECT_OFFSET + subject, ALIGNED_SIZE[0]) * 255.0
    for x, y in ARCFACE_TEMPLATE:
        cv2.circle(pattern, (int(round(x)), int(round(y))), 4, (20.0, 20.0, 20.0), -1)
    return np.clip(pattern, 0, 255).astype(np.uint8)


def placement(rng: np.random.Generator, crop: int) -> np.ndarray:
    """A random similarity (2, 3) from the template frame into a ``crop`` x ``crop`` loose crop."""
    scale = rng.uniform(0.85, 1.15) * crop / 150.0
    angle = math.radians(rng.uniform(-20.0, 20.0))
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([ALIGNED_SIZE[1] / 2.0, ALIGNED_SIZE[0] / 2.0])
    target = crop / 2.0 + rng.uniform(-0.06, 0.06, 2) * crop
    return np.hstack([rotation, (target - rotation @ centre)[:, None]])


def write_synthetic_ijb(root, target: str = "IJBC", identities: int = 6, templates_per_identity: int = 3,
                        media_per_template: int = 2, max_frames: int = 2, crop: int = 150,
                        max_pairs: int = 100_000, one_to_n: bool = True, seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``root`` (created); returns its counts."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "loose_crop").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    t = target.lower()
    patterns = [identity_pattern(seed, subject) for subject in range(identities)]
    landmark_lines, template_lines = [], []
    template_subject: Dict[int, int] = {}
    template_images: Dict[int, List[str]] = {}
    image, media = 0, 0
    for subject in range(identities):
        for _ in range(templates_per_identity):
            template = len(template_subject) + 1
            template_subject[template] = subject
            template_images[template] = []
            for _ in range(media_per_template):
                media += 1
                gain = rng.uniform(0.8, 1.2)
                for _ in range(int(rng.integers(1, max_frames + 1))):
                    image += 1
                    name = f"{image}.jpg"
                    matrix = placement(rng, crop)
                    rgb = cv2.warpAffine(patterns[subject], matrix, (crop, crop), borderValue=(90, 90, 90))
                    noisy = rgb.astype(np.float32) * gain + rng.normal(0.0, 6.0, rgb.shape)
                    bgr = cv2.cvtColor(np.clip(noisy, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
                    if not cv2.imwrite(str(root / "loose_crop" / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                        raise OSError(f"could not write {root / 'loose_crop' / name}")
                    points = ARCFACE_TEMPLATE.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
                    points += rng.normal(0.0, 0.3, points.shape)
                    score = rng.uniform(0.6, 1.0)
                    landmark_lines.append(" ".join([name] + [f"{v:.3f}" for v in points.ravel()] + [f"{score:.6f}"]))
                    template_lines.append(f"{name} {template} {media}")
                    template_images[template].append(name)
    pairs = [(a, b) for a, b in itertools.combinations(sorted(template_subject), 2)]
    genuine = [p for p in pairs if template_subject[p[0]] == template_subject[p[1]]]
    impostor = [p for p in pairs if template_subject[p[0]] != template_subject[p[1]]]
    keep = max(0, min(len(impostor), max_pairs - len(genuine)))
    chosen = sorted(rng.choice(len(impostor), size=keep, replace=False)) if keep < len(impostor) else range(len(impostor))
    pair_lines = [f"{a} {b} 1" for a, b in genuine] + [f"{impostor[i][0]} {impostor[i][1]} 0" for i in chosen]
    meta = root / "meta"
    (meta / f"{t}_name_5pts_score.txt").write_text("\n".join(landmark_lines) + "\n")
    (meta / f"{t}_face_tid_mid.txt").write_text("\n".join(template_lines) + "\n")
    (meta / f"{t}_template_pair_label.txt").write_text("\n".join(pair_lines) + "\n")
    if one_to_n:
        first = {s: min(tp for tp, sub in template_subject.items() if sub == s) for s in range(identities)}
        galleries = [[first[s] for s in range(identities) if s % 2 == g] for g in (0, 1)]
        probes = [tp for tp in sorted(template_subject) if tp not in first.values()]
        for path, listed in zip(list_files(root, target), galleries + [probes]):
            rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME"]
            rows += [f"{tp},{template_subject[tp] + 1},{image_name}" for tp in listed for image_name in template_images[tp]]
            path.write_text("\n".join(rows) + "\n")
    return {"images": image, "templates": len(template_subject), "media": media, "identities": identities,
            "pairs": len(pair_lines), "genuine": len(genuine)}
