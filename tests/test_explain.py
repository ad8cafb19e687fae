"""Where the global prompt looks (paper Fig. 5): ``DGL.global_attention`` against a plain
softmax of the last block's global queries, the plot, and ``dgl-rs explain``."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

import dgl_rs
from dgl_rs.backbone import openclip as patch
from dgl_rs.backbone.loading import SYNTHETIC_TINY_WEIGHTS, load_clip
from dgl_rs.cli import main
from dgl_rs.services.explain import explain_frames, plot_global_attention, save_figure

matplotlib.use("Agg")
pytestmark = pytest.mark.skipif(not SYNTHETIC_TINY_WEIGHTS.is_file(), reason="needs the shipped synthetic-tiny")
T = 4


def tiny_model(method="dgl-transformer", **options):
    torch.manual_seed(0)
    clip = load_clip("synthetic-tiny", "synthetic-tiny")[0]
    return dgl_rs.build_method(clip, method, num_frames=T, **options)


def reference_row(model, frames, layer, query):
    """The global query's probabilities in block ``layer``, from the block's input: ln_1,
    the q/k projection, softmax(q k^T / sqrt(d)) per head, heads averaged."""
    blocks = list(model.backbone.visual.transformer.resblocks)
    seen = {}
    handle = blocks[layer].ln_1.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            model.encode_video(frames)
    finally:
        handle.remove()
    blk, x = blocks[layer], seen["x"]
    d, h = x.shape[-1], blk.attn.num_heads
    q, k, _ = F.linear(blk.ln_1(x), blk.attn.in_proj_weight, blk.attn.in_proj_bias).split(d, dim=-1)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
    p = torch.softmax(split(q) @ split(k).transpose(-2, -1) / math.sqrt(d // h), dim=-1).mean(1)  # (B, S, S)
    g = model.num_global
    return p[:, :g].mean(1) if query == "mean" else p[:, query]


@pytest.mark.parametrize("layer,query", [(-1, 0), (0, 2), (2, "mean")])
def test_global_attention_equals_plain_softmax(layer, query):
    model = tiny_model()
    frames = torch.randn(2, T, 3, 64, 64)
    amap = model.global_attention(frames, layer=layer, query=query)
    row = reference_row(model, frames, layer, query)
    g, nf, L = model.num_global, model.num_frame_prompts, 1 + model.num_frame_prompts + 16
    per_frame = row[:, g:].reshape(2, T, L)
    assert amap.grid == (4, 4) and amap.layer == layer % 4 and amap.query == query
    torch.testing.assert_close(amap.frames, per_frame.sum(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(amap.patches, per_frame[:, :, 1 + nf:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(amap.on_global, row[:, :g].sum(-1), rtol=1e-5, atol=1e-6)
    # per-frame mass sums to the mass off the global tokens
    torch.testing.assert_close(amap.frames.sum(-1), 1 - amap.on_global, rtol=1e-5, atol=1e-6)
    assert amap.patch_grid().shape == (2, T, 4, 4)


def test_global_attention_leaves_the_embedding_alone():
    model = tiny_model("dgl-linear")
    frames = torch.randn(1, T, 3, 64, 64)
    with torch.no_grad():
        before = model.encode_video(frames)
        model.global_attention(frames)
        torch.testing.assert_close(model.encode_video(frames), before, rtol=0, atol=0)
    assert model._record is None  # the recording hook is gone


def test_local_attention_mode_gives_effective_weights():
    model = tiny_model(attention="local")
    amap = model.global_attention(torch.randn(1, T, 3, 64, 64), query="mean")
    torch.testing.assert_close(amap.frames.sum(-1) + amap.on_global, torch.ones(1), rtol=1e-5, atol=1e-6)


def test_global_attention_refusals():
    frames = torch.randn(1, T, 3, 64, 64)
    assert not hasattr(tiny_model("zero-shot"), "global_attention")  # a DGL method's
    with pytest.raises(ValueError, match="no global prompts"):
        tiny_model("dgl", generator="linear", num_global=0, pool="frame_cls_mean").global_attention(frames)
    model = tiny_model()
    with pytest.raises(ValueError, match="`layer` must be an int in \\[-4, 4\\)"):
        model.global_attention(frames, layer=4)
    with pytest.raises(ValueError, match="`query` must be an int in \\[-4, 4\\)"):
        model.global_attention(frames, query=7)
    with pytest.raises(ValueError, match="frames"):
        model.global_attention(torch.randn(1, T + 1, 3, 64, 64))


def test_plot_draws_frames_heat_and_bars(tmp_path):
    model = tiny_model()
    frames = torch.randn(2, T, 3, 64, 64)
    fig = plot_global_attention(frames, model.global_attention(frames), titles=["a", "b"])
    assert len(fig.axes) == 2 * (T + 1)
    bars = fig.axes[T]
    assert len(bars.patches) == T
    png = save_figure(fig, tmp_path / "fig.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="titles"):
        plot_global_attention(frames, model.global_attention(frames), titles=["only one"])


def test_explain_frames_reports_the_cosine():
    model = tiny_model()
    frames = torch.randn(T, 3, 64, 64)
    ex = explain_frames(model, frames, "a red circle moves from left to right")
    with torch.no_grad():
        v = F.normalize(model.encode_video(frames[None]), dim=-1)
        t = F.normalize(model.encode_text(dgl_rs.tokenize(["a red circle moves from left to right"], 32)), dim=-1)
    assert ex.similarity == pytest.approx(float(t @ v.T), abs=1e-6)
    assert "cosine" in ex.title()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from dgl_rs.data import write_synthetic_videos
    from dgl_rs.train.main import export_prompts
    from dgl_rs.train.params import parse_args

    root = tmp_path_factory.mktemp("explain")
    records = write_synthetic_videos(root / "v", split="temporal", num_videos=1, num_frames=8, image_size=64, seed=2)
    model = tiny_model()
    path = root / "run" / "prompts.safetensors"
    path.parent.mkdir()
    export_prompts(model, path, parse_args(["--dataset", "synthetic", "--pretrained", "synthetic-tiny",
                                            "--model", "synthetic-tiny"]))
    return records[0], path


def test_cli_explain_writes_a_png(run, tmp_path, capsys):
    record, prompts = run
    out = tmp_path / "fig.png"
    rc = main(["explain", record.video_path, record.captions[0], "--prompts", str(prompts), "--out", str(out),
               "--device", "cpu", "--query", "mean"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cosine similarity" in text and f"figure: {out}" in text


@pytest.mark.parametrize("args,match", [
    (["--query", "first"], "--query must be an int or 'mean'"),
    (["--layer", "9"], "`layer` must be an int"),
])
def test_cli_explain_errors_are_one_line(run, tmp_path, capsys, args, match):
    record, prompts = run
    rc = main(["explain", record.video_path, "a caption", "--prompts", str(prompts), "--out",
               str(tmp_path / "f.png"), "--device", "cpu", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("dgl-rs explain: error:") and match in err[0]
    assert main(["explain", str(tmp_path / "none.mp4"), "x", "--prompts", str(prompts), "--out", "f.png"]) == 2
