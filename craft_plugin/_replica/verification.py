"""Stand-in for arcface_torch's ``CallBackVerification`` and the parts of ``eval/verification.py`` it uses.

Written independently of craft-plugin's reader. ``load_bin`` decodes a ``.bin`` pair set through
mxnet as upstream does (it fails where mxnet cannot be imported; in a run with craft-plugin's hooks
the ``rec_reader`` feature replaces the callback class first). ``test`` is upstream's flip-sum
protocol: embeddings of each image and of its mirror image (inputs (x / 255 - 0.5) / 0.5) are
summed and L2-normalised; pair i is (2i, 2i + 1) and is called "same" when its squared distance is
below a threshold; accuracy is 10-fold over unshuffled folds, the threshold in ``arange(0, 4, 0.01)``
with the best accuracy on the other nine folds (the first best) scored on the held-out fold. Only
the flip-sum accuracy (upstream's ``acc2``) is computed: the callback uses nothing else.

As upstream, a ``val_targets`` name without a ``<rec_prefix>/<name>.bin`` file is skipped.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch

from craft_plugin._replica.distributed_sampler import get_dist_info

THRESHOLDS = np.arange(0, 4, 0.01)


class PlainDataUnpickler(pickle.Unpickler):
    """Builtin containers, bytes and bools only; the one global allowed is ``_codecs.encode``,
    which pickle protocol 2 uses to rebuild ``bytes``."""

    def find_class(self, module: str, name: str):
        if (module, name) != ("_codecs", "encode"):
            raise pickle.UnpicklingError(f"a .bin pair set may not reference {module}.{name}")
        return super().find_class(module, name)


def load_bin(path: str, image_size: Tuple[int, int]) -> Tuple[List[torch.Tensor], List[bool]]:
    """``([images, mirrored images], issame)``: float 0..255 NCHW tensors decoded by mxnet."""
    import mxnet as mx  # raises where mxnet cannot be imported, as upstream's eval/verification.py does

    with open(path, "rb") as handle:
        bins, issame_list = PlainDataUnpickler(handle, encoding="bytes").load()
    data_list = [torch.empty((len(issame_list) * 2, 3, image_size[0], image_size[1])) for _ in range(2)]
    for idx in range(len(issame_list) * 2):
        img = mx.image.imdecode(bins[idx])
        if img.shape[1] != image_size[0]:
            img = mx.image.resize_short(img, image_size[0])
        img = mx.nd.transpose(img, axes=(2, 0, 1))
        data_list[0][idx][:] = torch.from_numpy(img.asnumpy())
        data_list[1][idx][:] = torch.from_numpy(mx.nd.flip(data=img, axis=2).asnumpy())
    return data_list, issame_list


@torch.no_grad()
def embed(data: torch.Tensor, backbone: torch.nn.Module, batch_size: int) -> np.ndarray:
    chunks = [backbone((data[start:start + batch_size] / 255 - 0.5) / 0.5).detach().cpu().numpy()
              for start in range(0, data.shape[0], batch_size)]
    return np.concatenate(chunks).astype(np.float64)


def fold_accuracy(dist: np.ndarray, issame: np.ndarray, nfolds: int) -> np.ndarray:
    bounds = np.cumsum([0] + [dist.size // nfolds + int(f < dist.size % nfolds) for f in range(nfolds)])
    accuracy = np.zeros(nfolds)
    for fold in range(nfolds):
        held_out = np.zeros(dist.size, dtype=bool)
        held_out[bounds[fold]:bounds[fold + 1]] = True
        train_acc = [np.mean((dist[~held_out] < t) == issame[~held_out]) for t in THRESHOLDS]
        best = THRESHOLDS[int(np.argmax(train_acc))]
        accuracy[fold] = np.mean((dist[held_out] < best) == issame[held_out])
    return accuracy


def test(data_set: Tuple[List[torch.Tensor], List[bool]], backbone: torch.nn.Module, batch_size: int,
         nfolds: int = 10) -> Tuple[float, float, float]:
    """``(flip-sum accuracy mean, its std, mean embedding norm)``."""
    data_list, issame_list = data_set
    views = [embed(data, backbone, batch_size) for data in data_list]
    xnorm = float(np.mean([np.linalg.norm(view, axis=1) for view in views]))
    summed = views[0] + views[1]
    summed = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    dist = np.sum((summed[0::2] - summed[1::2]) ** 2, axis=1)
    accuracy = fold_accuracy(dist, np.asarray(issame_list, dtype=bool), nfolds)
    return float(accuracy.mean()), float(accuracy.std()), xnorm


class CallBackVerification:
    def __init__(self, val_targets: Sequence[str], rec_prefix: str, summary_writer: Any = None,
                 image_size: Tuple[int, int] = (112, 112), wandb_logger: Any = None):
        self.rank = get_dist_info()[0]
        self.highest_acc_list: List[float] = [0.0] * len(val_targets)
        self.ver_list: list = []
        self.ver_name_list: List[str] = []
        if self.rank == 0:
            for name in val_targets:
                path = os.path.join(rec_prefix, name + ".bin")
                if os.path.exists(path):
                    self.ver_list.append(load_bin(path, image_size))
                    self.ver_name_list.append(name)
        self.summary_writer = summary_writer
        self.wandb_logger = wandb_logger

    def ver_test(self, backbone: torch.nn.Module, global_step: int) -> None:
        for i, (name, data_set) in enumerate(zip(self.ver_name_list, self.ver_list)):
            acc2, std2, xnorm = test(data_set, backbone, 10, 10)
            logging.info("[%s][%d]XNorm: %f", name, global_step, xnorm)
            logging.info("[%s][%d]Accuracy-Flip: %1.5f+-%1.5f", name, global_step, acc2, std2)
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(tag=name, scalar_value=acc2, global_step=global_step)
            if self.wandb_logger:
                self.wandb_logger.log({f"Acc/val-Acc2 {name}": acc2})
            self.highest_acc_list[i] = max(self.highest_acc_list[i], acc2)
            logging.info("[%s][%d]Accuracy-Highest: %1.5f", name, global_step, self.highest_acc_list[i])

    def __call__(self, num_update: int, backbone: torch.nn.Module) -> None:
        if self.rank == 0 and num_update > 0:
            backbone.eval()
            self.ver_test(backbone, num_update)
            backbone.train()
