"""arcface_torch's verification protocol (LFW-style pairs, 10-fold), without mxnet or sklearn.

For each pair set: embeddings of the images and of their horizontal flips are summed
(flip-sum), L2-normalised, and the squared distance of each pair is thresholded. Accuracy is
10-fold: on 9 folds the threshold in ``arange(0, 4, 0.01)`` with the best accuracy is chosen
(the first best), and it is scored on the held-out fold (folds as sklearn's unshuffled KFold).
Upstream's callback logs only this accuracy, so VAL@FAR is not computed.
Unlike upstream, a set smaller than one batch is embedded in one short batch, and a set with fewer
pairs than folds uses one fold per pair (with a warning).
"""
from __future__ import annotations

import logging
import os
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch

from craft_plugin.data.binfile import load_bin

THRESHOLDS = np.arange(0, 4, 0.01)


def kfold_indices(n: int, folds: int) -> List[np.ndarray]:
    """Test indices of unshuffled K folds: the first ``n % folds`` folds hold one extra item."""
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(folds)]


def accuracy_at(threshold: float, dist: np.ndarray, issame: np.ndarray) -> float:
    predict = dist < threshold
    return float(np.mean(predict == issame)) if dist.size else 0.0


def kfold_accuracy(dist: np.ndarray, issame: np.ndarray, folds: int = 10,
                   thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Per-fold accuracy at the threshold chosen on the other folds."""
    if dist.size < folds:
        raise ValueError(f"{dist.size} pairs cannot be split into {folds} folds")
    accuracy = np.zeros(folds)
    everything = np.arange(dist.size)
    for fold, test in enumerate(kfold_indices(dist.size, folds)):
        train = np.setdiff1d(everything, test)
        train_acc = [accuracy_at(t, dist[train], issame[train]) for t in thresholds]
        accuracy[fold] = accuracy_at(thresholds[int(np.argmax(train_acc))], dist[test], issame[test])
    return accuracy


def flip_sum_distances(per_view: Sequence[np.ndarray]) -> Tuple[np.ndarray, float]:
    """``(squared distance of each pair, XNorm)`` from the embeddings of the images and of their
    flips (rows 2i and 2i + 1 form pair i): the two views are summed and L2-normalised; XNorm is the
    mean L2 norm of all embeddings of both views. Computed in the dtype given (upstream's ``test()``
    holds the embeddings in float64)."""
    xnorm = float(np.mean([np.linalg.norm(e, axis=1).mean() for e in per_view]))
    emb = per_view[0] + per_view[1]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.sum((emb[0::2] - emb[1::2]) ** 2, axis=1), xnorm


@torch.no_grad()
def embed(data: torch.Tensor, backbone: torch.nn.Module, batch_size: int) -> np.ndarray:
    """Embeddings of 0..255 images, normalised to [-1, 1] as upstream does, in batches."""
    out = [backbone((data[i:i + batch_size] / 255 - 0.5) / 0.5).float().cpu().numpy()
           for i in range(0, data.shape[0], batch_size)]
    return np.concatenate(out)


def test(data_set: Tuple[List[torch.Tensor], List[bool]], backbone: torch.nn.Module,
         batch_size: int = 10, nfolds: int = 10) -> Tuple[float, float, float]:
    """``(accuracy mean, accuracy std, mean embedding norm)`` of ``backbone`` on a loaded ``.bin``."""
    accuracy, xnorm = fold_accuracy(data_set, backbone, batch_size, nfolds)
    return float(accuracy.mean()), float(accuracy.std()), xnorm


def fold_accuracy(data_set: Tuple[List[torch.Tensor], List[bool]], backbone: torch.nn.Module,
                  batch_size: int = 10, nfolds: int = 10) -> Tuple[np.ndarray, float]:
    """``(per-fold accuracy, mean embedding norm)``: the folds are fixed by the pair order, so two
    backbones scored on one ``.bin`` can be compared fold by fold (paired)."""
    data_list, issame_list = data_set
    dist, xnorm = flip_sum_distances([embed(data, backbone, batch_size) for data in data_list])
    if dist.size < nfolds:
        logging.warning("verification: %d pairs, fewer than %d folds; using %d folds", dist.size, nfolds, dist.size)
    return kfold_accuracy(dist, np.asarray(issame_list, dtype=bool), min(nfolds, dist.size)), xnorm


class CallBackVerification:
    """Drop-in for arcface_torch's ``utils.utils_callbacks.CallBackVerification`` (same constructor).

    Loads ``<rec_prefix>/<name>.bin`` for each name in ``val_targets`` and, when called on rank 0,
    logs each set's flip-sum 10-fold accuracy, writes it to TensorBoard, and keeps the best.
    """

    def __init__(self, val_targets: Sequence[str], rec_prefix: str, summary_writer: Any = None,
                 image_size: Tuple[int, int] = (112, 112), wandb_logger: Any = None):
        self.rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.summary_writer = summary_writer
        self.wandb_logger = wandb_logger
        self.names: List[str] = []
        self.sets: list = []
        self.highest_acc_list: List[float] = []
        self.last_results: dict = {}
        if self.rank == 0:
            for name in val_targets:
                path = os.path.join(rec_prefix, name + ".bin")
                if not os.path.exists(path):
                    raise FileNotFoundError(f"config.val_targets names {name!r} but {path} does not exist")
                self.sets.append(load_bin(path, image_size))
                self.names.append(name)
                self.highest_acc_list.append(0.0)

    def __call__(self, num_update: int, backbone: torch.nn.Module) -> None:
        if self.rank != 0 or not self.sets or num_update <= 0:
            return
        was_training = backbone.training
        backbone.eval()
        for i, (name, data_set) in enumerate(zip(self.names, self.sets)):
            acc, std, xnorm = test(data_set, backbone, 10, 10)
            self.highest_acc_list[i] = max(self.highest_acc_list[i], acc)
            self.last_results[name] = acc
            logging.info("[%s][%d]XNorm: %f", name, num_update, xnorm)
            logging.info("[%s][%d]Accuracy-Flip: %1.5f+-%1.5f", name, num_update, acc, std)
            logging.info("[%s][%d]Accuracy-Highest: %1.5f", name, num_update, self.highest_acc_list[i])
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(name, acc, num_update)
            if self.wandb_logger is not None:
                self.wandb_logger.log({f"Acc/val-Acc1 {name}": acc, f"Acc/val-Acc2 {name}": acc})
        backbone.train(was_training)
