"""The model under evaluation (craft_plugin.evaluation.models): a model.pt and a checkpoint_gpu_0.pt
loaded weights-only through a --module factory give arcface_torch's embeddings; an .onnx exported
from the same network gives them too when fed as insightface's model_zoo feeds an ArcFaceONNX; the
model_zoo rule for mean/std (a graph that starts with Sub and Mul normalises itself) and RGB order;
every bad model is one line, exit 2."""
from __future__ import annotations

import argparse

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from eval_model_helpers import MODULE, face_images, run_cli, run_json, torch_embeddings, trained_tiny, write_bin
from craft_plugin.cli import UsageError
from craft_plugin.evaluation.models import add_model_arguments, load_embedder


def model_args(*argv):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    net = trained_tiny(seed=2)
    torch.save(net.state_dict(), root / "model.pt")
    torch.save({"epoch": 1, "global_step": 5, "state_dict_backbone": net.state_dict()}, root / "checkpoint_gpu_0.pt")
    return root, net


def test_model_pt_folder_and_checkpoint_give_arcface_torch_embeddings(trained):
    root, net = trained
    rgb = images(11)
    want = torch_embeddings(net, rgb)
    for model in (root / "model.pt", root, root / "checkpoint_gpu_0.pt"):
        embedder = load_embedder(str(model), model_args(*MODULE, "--batch-size", "4", "--device", "cpu"))
        got = embedder.embed(rgb)
        assert got.dtype == np.float32 and got.shape == (11, 16)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert embedder.input_size == (112, 112) and embedder.embedding_size == 16 and embedder.device == "cpu"
        assert embedder.describe()["format"] == "torch" and embedder.describe()["network"] == "tiny"
    # the engine's path: uint8 NCHW tensors
    tensor = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    np.testing.assert_allclose(embedder.embed_tensor(tensor).numpy(), want, rtol=1e-6, atol=1e-6)


def test_exported_onnx_gives_the_same_embeddings_through_model_zoo_preprocessing(trained, tmp_path, capsys):
    root, net = trained
    code, _, err = run_cli(["export", root / "model.pt", tmp_path / "model.onnx", *MODULE, "--json"], capsys)
    assert code == 0, err
    embedder = load_embedder(str(tmp_path / "model.onnx"), model_args("--batch-size", "3", "--device", "cpu"))
    assert embedder.input_size == (112, 112) and embedder.embedding_size == 16
    assert (embedder.input_mean, embedder.input_std) == (127.5, 127.5)  # torch2onnx's graph does not normalise
    rgb = images(7, seed=1)
    np.testing.assert_allclose(embedder.embed(rgb), torch_embeddings(net, rgb), rtol=1e-4, atol=1e-5)


def pooling_graph(path, normalise_in_graph: bool, batch="N"):
    """A recognition-shaped graph (1x3x112x112 float in, (N, 3) out): the per-channel mean of its
    input, after a Sub 127.5 / Mul 1/127.5 of its own when ``normalise_in_graph`` (as mxnet models)."""
    nodes, first = [], "data"
    if normalise_in_graph:
        nodes += [helper.make_node("Sub", ["data", "mean"], ["centred"], name="Sub_0"),
                  helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="Mul_1")]
        first = "scaled"
    nodes += [helper.make_node("GlobalAveragePool", [first], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["embedding"], name="flat")]
    inits = [helper.make_tensor("mean", TensorProto.FLOAT, [], [127.5]),
             helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 127.5])] if normalise_in_graph else []
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 112, 112])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return path


@pytest.mark.parametrize("normalise_in_graph,batch", [(True, "N"), (False, "N"), (False, 1)])
def test_model_zoo_mean_std_rule_and_rgb_order(tmp_path, normalise_in_graph, batch):
    path = pooling_graph(tmp_path / "zoo.onnx", normalise_in_graph, batch)
    embedder = load_embedder(str(path), model_args("--device", "cpu", "--batch-size", "2"))
    assert (embedder.input_mean, embedder.input_std) == ((0.0, 1.0) if normalise_in_graph else (127.5, 127.5))
    rgb = images(5, seed=4)
    rgb[..., 0] = 250   # R differs from B: a swapped channel order shows
    rgb[..., 2] = 10
    want = ((rgb.astype(np.float64) - 127.5) / 127.5).mean(axis=(1, 2))   # (N, 3) in R, G, B order
    np.testing.assert_allclose(embedder.embed(rgb), want, atol=1e-4)  # float32 sums of 12544 pixels


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-bin")
    write_bin(root / "lfw.bin", *face_images(20, seed=5))
    return root


def refused(argv, capsys, *needles):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_models_are_one_line(trained, tiny_bin, tmp_path, capsys):
    root, _ = trained
    data = ["--data", tiny_bin, "--targets", "lfw", "--json"]
    refused(["eval", "bin", root / "model.pt", *data, "--module", "eval_model_helpers:tiny",
             "--network", "featuremap", "--embedding-size", "16"], capsys, "not an embedding model", "(2, 3, 4, 4)")
    flat = tmp_path / "flat.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["data"], ["embedding"])], "g",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 512])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(flat))
    refused(["eval", "bin", flat, *data], capsys, "unsupported input", "(N, 3, H, W)")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    refused(["eval", "bin", tmp_path / "junk.onnx", *data], capsys, "junk.onnx", "not a readable ONNX model")
    (tmp_path / "model.pt").write_bytes((root / "model.pt").read_bytes()[:300])   # truncated
    refused(["eval", "bin", tmp_path / "model.pt", *data, *MODULE], capsys, "not a readable torch file")
    refused(["eval", "bin", root / "model.pt", *data, *MODULE, "--device", "cpu", "--fp16"], capsys, "--fp16")
    refused(["eval", "bin", flat, *data, "--network", "r50"], capsys, "--network", "an .onnx carries its network")
    refused(["eval", "bin", root / "model.pt", *data, "--module", "eval_model_helpers:tiny", "--network", "tiny",
             "--embedding-size", "8"], capsys, "does not fit network 'tiny' with num_features=8")
    refused(["eval", "bin", tmp_path / "missing.onnx", *data], capsys, "missing.onnx: no such file")


def test_cuda_refused_where_there_is_none(trained):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="--device cuda: CUDA is not available"):
        load_embedder(str(trained[0] / "model.pt"), model_args(*MODULE, "--device", "cuda"))


def test_onnx_and_torch_give_the_same_bin_accuracy(trained, tiny_bin, tmp_path, capsys):
    root, _ = trained
    assert run_cli(["export", root / "model.pt", tmp_path / "m.onnx", *MODULE, "--json"], capsys)[0] == 0
    via_torch = run_json(["eval", "bin", root / "model.pt", "--data", tiny_bin, "--targets", "lfw", *MODULE], capsys)
    via_onnx = run_json(["eval", "bin", tmp_path / "m.onnx", "--data", tiny_bin, "--targets", "lfw"], capsys)
    assert via_onnx["model"]["format"] == "onnx" and via_onnx["model"]["input"].startswith("(x - 127.5) / 127.5")
    a, b = via_torch["targets"]["lfw"], via_onnx["targets"]["lfw"]
    assert a["fold_accuracy"] == b["fold_accuracy"] and a["xnorm"] == pytest.approx(b["xnorm"], rel=1e-5)
