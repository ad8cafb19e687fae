"""Files saved before the issue-17 layout (tests/data/legacy, written at dc26b58 by
make_fixtures.py) still load and give the embeddings they gave then.

The embeddings were computed by the same float32 CPU code path (the same ops in the same
order), so they must agree to float32 rounding (atol 1e-5 on embeddings of norm ~1-10).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import dgl_rs
from dgl_rs.factory import load_model

HERE = Path(__file__).resolve().parent / "data" / "legacy"
EXPECTED = np.load(HERE / "embeddings.npz")
METHODS = sorted({k.split("/")[0] for k in EXPECTED.files if "/" in k})


@pytest.fixture(scope="module")
def clip():
    model, _, _ = dgl_rs.load_clip("synthetic-tiny", "synthetic-tiny")
    return model


def _check(model, name):
    frames, tokens = torch.from_numpy(EXPECTED["frames"]), torch.from_numpy(EXPECTED["tokens"])
    with torch.no_grad():
        video, text = model.encode_video(frames).numpy(), model.encode_text(tokens).numpy()
    np.testing.assert_allclose(video, EXPECTED[f"{name}/video"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(text, EXPECTED[f"{name}/text"], rtol=0, atol=1e-5)


def test_every_method_has_a_fixture():
    assert set(METHODS) == {m for m in dgl_rs.METHODS if not m.startswith("full-finetune")}


@pytest.mark.parametrize("name", METHODS)
def test_prompt_file_loads_with_the_same_embeddings(clip, name):
    model = dgl_rs.load_method(HERE / f"{name}.safetensors", clip).eval()
    assert model.method == name
    _check(model, name)


@pytest.mark.parametrize("name", ["dgl-linear", "vop-f"])
def test_checkpoint_loads_with_the_same_embeddings(name):
    model, _, meta = load_model(HERE / f"{name}.ckpt.safetensors")
    assert meta["method"] == name
    _check(model, name)
