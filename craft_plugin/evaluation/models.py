"""The model under evaluation: a trained arcface_torch backbone or an ONNX recognition model, as one
:class:`Embedder` that turns aligned RGB face crops into embeddings.

- ``model.pt``, a folder holding one, or ``checkpoint_gpu_N.pt``: loaded weights-only into the
  user's ``backbones.get_model`` with the options and loader of ``craft-plugin export``
  (:mod:`craft_plugin.backbone_loading`); the input is normalised as arcface_torch does,
  ``(x / 255 - 0.5) / 0.5`` on RGB, 112x112. ``--fp16`` runs the forward under CUDA autocast.
- ``*.onnx``: run with onnxruntime and fed as insightface's ``model_zoo`` feeds an ``ArcFaceONNX``:
  the input size is the graph's, ``(x - mean) / std`` with mean = std = 127.5, or mean 0 and std 1
  when the graph starts by normalising itself (a ``Sub`` and a ``Mul`` node among its first 8 nodes,
  as mxnet-converted models do), on RGB (model_zoo swaps BGR to RGB); the blob is made by OpenCV's
  ``dnn.blobFromImages`` as there, so the values are model_zoo's on the installed OpenCV.

``embed`` is one forward of exactly the images given: no flip and no normalisation of the output
(the callers do both as the protocols they implement say)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from craft_plugin.backbone_loading import (ModelError, add_network_arguments, build_network, load_backbone_state,
                                           network_factory)

DEFAULT_BATCH_SIZE = 128
TORCH_INPUT_SIZE = (112, 112)   # arcface_torch's aligned crops (H, W)
ZOO_SCAN_NODES = 8              # ArcFaceONNX looks for Sub and Mul among the first 8 nodes
ZOO_MEAN_STD = (127.5, 127.5)   # ArcFaceONNX's input mean and std, unless the graph normalises itself
PROBE_IMAGES = 2                # images of the forward that checks the model's output at load time

if TYPE_CHECKING:  # numpy and torch are imported where used: the CLI parser imports this module
    import numpy as np


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose and run the model; MODEL itself is each verb's positional argument."""
    add_network_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help="images per forward")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        help="where the model runs; cuda is the GPU of LOCAL_RANK under torchrun "
                             "(default: cuda if available, else cpu)")
    parser.add_argument("--fp16", action="store_true",
                        help="half-precision forward under CUDA autocast (torch models on --device cuda only)")


class Embedder:
    """Aligned RGB crops -> embeddings. ``input_size`` is (H, W)."""

    input_size: Tuple[int, int]
    embedding_size: int
    device: str

    def describe(self) -> Dict[str, Any]:
        """What the results JSON records about the model."""
        raise NotImplementedError

    def embed(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, D) embeddings of uint8 (N, H, W, 3) RGB images, one forward each, in batches."""
        raise NotImplementedError

    def check_images(self, images: np.ndarray) -> None:
        import numpy as np

        want = (*self.input_size, 3)
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"expected uint8 images of shape (N, {want[0]}, {want[1]}, 3), "
                             f"got {images.dtype} {tuple(images.shape)}")


def check_output(model: str, output: Any, batch: int) -> None:
    """The output must be a float (batch, D) array or tensor."""
    shape = tuple(getattr(output, "shape", ()))
    dtype = str(getattr(output, "dtype", type(output).__name__))
    if len(shape) != 2 or shape[0] != batch or shape[1] < 1 or "float" not in dtype:
        raise ModelError(f"{model}: not an embedding model: a batch of {batch} images gave "
                         f"{dtype} {shape if shape else type(output).__name__}, expected float ({batch}, D)")


class TorchEmbedder(Embedder):
    """A backbone built by ``get_model`` with trained weights, arcface_torch's input normalisation."""

    def __init__(self, net: Any, model: str, device: str, batch_size: int, fp16: bool, info: Dict[str, Any]):
        self.net, self.model, self.device, self.batch_size, self.fp16 = net, model, device, batch_size, fp16
        self.input_size = TORCH_INPUT_SIZE
        self.info = info
        import torch

        probe = torch.zeros((PROBE_IMAGES, 3, *self.input_size), dtype=torch.uint8)
        out = self._forward(probe.to(device))
        check_output(model, out, PROBE_IMAGES)
        self.embedding_size = int(out.shape[1])

    def _forward(self, batch: Any) -> Any:
        import torch

        x = (batch.float() / 255 - 0.5) / 0.5   # arcface_torch's ((x / 255) - 0.5) / 0.5
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast, contextlib.redirect_stdout(sys.stderr):
            return self.net(x)

    def embed_tensor(self, images: Any) -> Any:
        """float32 (N, D) embeddings on this embedder's device of uint8 (N, 3, H, W) images on any device."""
        import torch

        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, *self.input_size):
            raise ValueError(f"expected a uint8 tensor (N, 3, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {images.dtype} {tuple(images.shape)}")
        outs = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device, non_blocking=True)
            out = self._forward(batch)
            check_output(self.model, out, batch.shape[0])
            outs.append(out.float())
        if not outs:
            return torch.empty((0, self.embedding_size), device=self.device)
        return torch.cat(outs)

    def embed(self, images: np.ndarray) -> np.ndarray:
        import numpy as np
        import torch

        self.check_images(images)
        tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return self.embed_tensor(tensor).cpu().numpy().astype(np.float32, copy=False)

    def describe(self) -> Dict[str, Any]:
        return {"format": "torch", **self.info, "embedding_size": self.embedding_size,
                "input_size": list(self.input_size), "device": self.device, "fp16": self.fp16,
                "input": "(x / 255 - 0.5) / 0.5, RGB"}


class OnnxEmbedder(Embedder):
    """An ONNX recognition model fed as insightface's model_zoo ``ArcFaceONNX`` feeds it."""

    def __init__(self, path: Path, device: str, batch_size: int):
        try:
            import onnx
            import onnxruntime
        except ImportError as exc:
            raise ModelError(f"{path}: evaluating an .onnx needs onnx and onnxruntime "
                             f"(pip install 'craft-plugin[onnx]'): {exc}") from exc
        self.model, self.device, self.batch_size = str(path), device, batch_size
        try:
            graph = onnx.load(str(path)).graph
            providers = ["CPUExecutionProvider"]
            if device.startswith("cuda"):
                if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                    raise ModelError(f"{path}: --device cuda needs onnxruntime-gpu (this onnxruntime has "
                                     f"{onnxruntime.get_available_providers()}); use --device cpu")
                providers = [("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)})]
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except ModelError:
            raise
        except Exception as exc:  # protobuf or onnxruntime errors: a truncated or foreign file
            raise ModelError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(inputs) != 1 or len(outputs) != 1 or len(shape) != 4 or shape[1] != 3 \
                or not all(isinstance(d, int) and d > 0 for d in shape[2:]) or inputs[0].type != "tensor(float)":
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs) or "no input"
            raise ModelError(f"{path}: unsupported input: expected one float input (N, 3, H, W) with fixed H and W "
                             f"and one output, as model_zoo's ArcFaceONNX; found {found} and {len(outputs)} output(s)")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_size = (int(shape[2]), int(shape[3]))
        names = [node.name for node in graph.node[:ZOO_SCAN_NODES]]
        self_normalising = any(n.startswith(("Sub", "_minus")) for n in names) and \
            any(n.startswith(("Mul", "_mul")) for n in names)
        self.input_mean, self.input_std = (0.0, 1.0) if self_normalising else ZOO_MEAN_STD
        import numpy as np

        probe = self._run(np.zeros((PROBE_IMAGES, *self.input_size, 3), dtype=np.uint8))
        check_output(self.model, probe, PROBE_IMAGES)
        self.embedding_size = int(probe.shape[1])

    def _blob(self, images: np.ndarray) -> np.ndarray:
        import cv2

        # model_zoo: blobFromImages(BGR, 1 / std, (W, H), mean, swapRB=True); ours are RGB already
        return cv2.dnn.blobFromImages(list(images), 1.0 / self.input_std, self.input_size[::-1],
                                      (self.input_mean,) * 3, swapRB=False)

    def _run(self, images: np.ndarray) -> np.ndarray:
        import numpy as np

        blob = self._blob(images)
        n = blob.shape[0]
        if self.fixed_batch and n != self.fixed_batch:  # a graph with a fixed batch: pad the last one
            if n > self.fixed_batch:
                return np.concatenate([self._run(images[i:i + self.fixed_batch])
                                       for i in range(0, n, self.fixed_batch)])
            blob = np.concatenate([blob, np.zeros((self.fixed_batch - n, *blob.shape[1:]), blob.dtype)])
        try:
            out = self.session.run([self.output_name], {self.input_name: blob})[0]
        except Exception as exc:  # onnxruntime's errors name the node; keep one line
            raise ModelError(f"{self.model}: onnxruntime failed on a batch of {n}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        return out[:n]

    def embed(self, images: np.ndarray) -> np.ndarray:
        import numpy as np

        self.check_images(images)
        outs: List[np.ndarray] = []
        for start in range(0, images.shape[0], self.batch_size):
            out = self._run(images[start:start + self.batch_size])
            check_output(self.model, out, min(self.batch_size, images.shape[0] - start))
            outs.append(out.astype(np.float32, copy=False))
        return np.concatenate(outs) if outs else np.empty((0, self.embedding_size), np.float32)

    def describe(self) -> Dict[str, Any]:
        return {"format": "onnx", "path": str(Path(self.model).resolve()), "embedding_size": self.embedding_size,
                "input_size": list(self.input_size), "device": self.device, "fp16": False,
                "input": f"(x - {self.input_mean:g}) / {self.input_std:g}, RGB (insightface model_zoo ArcFaceONNX)"}


def resolve_device(args: argparse.Namespace) -> str:
    """``cpu`` or ``cuda:K`` (K = LOCAL_RANK under torchrun, else 0), checked."""
    import torch

    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device cuda: CUDA is not available to torch {torch.__version__}; use --device cpu")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if getattr(args, "fp16", False) and not device.startswith("cuda"):
        raise ModelError("--fp16 needs --device cuda: half precision is for the GPU forward only")
    return device


def load_embedder(model: str, args: argparse.Namespace) -> Embedder:
    """The :class:`Embedder` of MODEL (a ``.onnx``, or a ``model.pt``/folder/``checkpoint_gpu_N.pt``
    with the network options of ``args``); raises :class:`ModelError` (a UsageError) with one line."""
    batch_size = getattr(args, "batch_size", DEFAULT_BATCH_SIZE)
    if batch_size < 1:
        raise ModelError(f"--batch-size {batch_size}: expected an integer >= 1")
    device = resolve_device(args)
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if getattr(args, "fp16", False):
            raise ModelError(f"--fp16 applies to torch models; {model} runs in the precision it was exported in")
        given = [f"--{k.replace('_', '-')}" for k in ("arcface_torch", "config", "module", "network", "embedding_size")
                 if getattr(args, k, None)]
        if given:
            raise ModelError(f"{' '.join(given)}: an .onnx carries its network; give these only with a model.pt "
                             f"or checkpoint")
        if not path.is_file():
            raise ModelError(f"{model}: no such file")
        return OnnxEmbedder(path, device, batch_size)
    with contextlib.redirect_stdout(sys.stderr):  # whatever the user's network code prints stays off stdout
        factory, network, embedding_size, source = network_factory(args)
        state = load_backbone_state(path)
        net = build_network(factory, network, embedding_size, state, path)
    source_path = path / "model.pt" if path.is_dir() else path
    info = {"path": str(source_path.resolve()), "network": network, "factory": source,
            "num_features": embedding_size, "batch_size": batch_size}
    return TorchEmbedder(net.to(device), model, device, batch_size, bool(getattr(args, "fp16", False)), info)

