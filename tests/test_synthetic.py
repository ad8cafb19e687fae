"""The synthetic static / temporal benchmark."""

import re

import numpy as np
import pytest
import torch

from dgl_rs.data import (
    SyntheticVideoDataset,
    describe_frame,
    make_loader,
    make_specs,
    read_folder,
    render_video,
    sample_stills,
    write_synthetic_videos,
)
from dgl_rs.data import EvalSet, VideoTransform
from dgl_rs.data.synthetic import COLOURS, SHAPES, segment_times

C = "|".join(COLOURS)
S = "|".join(SHAPES)
PLACE = r"(in the (top|bottom) (left|right)|at the (top|bottom)|on the (left|right)|in the centre)"
OBJ = rf"a ({C}) ({S}) {PLACE}"
TEMPLATES = {
    "static": re.compile(rf"^{OBJ}( and {OBJ})?$"),
    "motion": re.compile(rf"^a ({C}) ({S}) moves from (left to right|right to left|top to "
                         rf"bottom|bottom to top) (at the top|at the bottom|in the middle|"
                         rf"on the left|on the right)$"),
    "order": re.compile(rf"^a ({C}) ({S}) (appears|disappears), then a ({C}) ({S}) "
                        rf"(appears|disappears)$"),
    "colour": re.compile(rf"^a ({S}) {PLACE} turns from ({C}) to ({C})$"),
}


def tokenizer(texts):
    return torch.tensor([[len(t), sum(map(ord, t)) % 1000] for t in texts], dtype=torch.long)


def test_deterministic_by_seed():
    a, b, c = (make_specs("temporal", 12, seed) for seed in (3, 3, 4))
    assert a == b and a != c
    assert torch.equal(render_video(a[0]), render_video(b[0]))
    ds1 = SyntheticVideoDataset("static", 6, num_frames=4, seed=1, train=False)
    ds2 = SyntheticVideoDataset("static", 6, num_frames=4, seed=1, train=False)
    assert ds1.captions == ds2.captions and torch.equal(ds1[2]["frames"], ds2[2]["frames"])


@pytest.mark.parametrize("split", ["static", "temporal", "mixed"])
def test_caption_templates(split):
    specs = make_specs(split, 60, seed=0)
    kinds = {s.kind for s in specs}
    assert kinds == ({"static"} if split == "static" else
                     {"motion", "order", "colour"} | ({"static"} if split == "mixed" else set()))
    for s in specs:
        assert TEMPLATES[s.kind].match(s.caption), s.caption
    assert len({s.caption for s in specs}) == len(specs)  # distinct: one right answer


def test_reversal_gives_the_same_frames_backwards_and_a_different_caption():
    specs = make_specs("temporal", 30, seed=0)
    captions = {s.caption for s in specs}
    for spec in specs:
        fwd = render_video(spec, 12)
        rev = render_video(spec.reversed(), 12)
        assert torch.equal(rev, fwd.flip(0))
        assert spec.reversed().caption != spec.caption
        assert spec.reversed().caption in captions  # the partner is in the split
        assert spec.reversed().reversed() == spec


def test_mean_pooling_cannot_tell_a_video_from_its_reversal():
    """Any per-frame feature, averaged over frames, is identical for a video and its
    reversal, while their captions differ: the temporal split needs frame order."""
    torch.manual_seed(0)
    feature = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(),
                                  torch.nn.Flatten(), torch.nn.LazyLinear(16))
    tr = VideoTransform(64)
    for spec in make_specs("temporal", 6, seed=1):
        with torch.no_grad():
            f = feature(tr(render_video(spec, 12)))
            r = feature(tr(render_video(spec.reversed(), 12)))
        assert torch.allclose(f.mean(0), r.mean(0), atol=1e-6)
        # ...whereas an order-aware summary (last minus first frame) tells them apart
        assert not torch.allclose(f[-1] - f[0], r[-1] - r[0], atol=1e-3)


def test_static_any_frame_answers_temporal_needs_order():
    for spec in make_specs("static", 20, seed=2):
        assert all(describe_frame(spec, u) == spec.caption for u in segment_times(12))
    for spec in make_specs("temporal", 12, seed=2):
        first, last = describe_frame(spec, 0.02), describe_frame(spec, 0.98)
        assert first != last  # the story changes between the first and the last frame
        if spec.kind == "order":
            assert (last if spec.time_reversed else first) == ""  # nothing there yet


def test_render_shapes_and_colours():
    spec = make_specs("static", 1, seed=5)[0]
    v = render_video(spec, 5, image_size=64)
    assert v.shape == (5, 64, 64, 3) and v.dtype == torch.uint8
    colours = {tuple(c) for c in v[0].reshape(-1, 3).tolist()}
    assert {COLOURS[o.colour] for o in spec.objects} <= colours


def test_train_times_one_per_segment():
    t = segment_times(8, train=True, rng=np.random.default_rng(0))
    assert np.all((t >= np.arange(8) / 8) & (t < (np.arange(8) + 1) / 8))
    assert np.allclose(segment_times(4), [0.125, 0.375, 0.625, 0.875])


def test_dataset_interfaces():
    train = SyntheticVideoDataset("temporal", 8, num_frames=6, seed=0, train=True,
                                  tokenizer=tokenizer)
    item = train[0]
    assert item["frames"].shape == (6, 3, 64, 64) and item["frames"].dtype == torch.float32
    assert item["text"].shape == (2,) and item["video_index"] == 0
    batch = next(iter(make_loader(train, 4, shuffle=True, seed=0)))
    assert batch["frames"].shape == (4, 6, 3, 64, 64) and batch["num_skipped"] == 0
    test = SyntheticVideoDataset("temporal", 8, num_frames=6, seed=0, train=False,
                                 image_size=32)
    assert len(test) == 8 and test[3]["frames"].shape == (6, 3, 32, 32)
    assert test.caption_to_video.tolist() == list(range(8))
    assert test.captions == [s.caption for s in test.specs]


SOT, EOT = 49406, 49407  # open_clip's start / end of text ids

CAPTIONS = ["a red circle in the top left", "A Blue  square, on the RIGHT!",
            "a green triangle appears, then a white circle disappears",
            " ".join(["a purple square moves from left to right at the top"] * 4)]  # > 32 tokens


def test_the_package_tokenizer_gives_the_ids_of_open_clips_simple_tokenizer():
    """The synthetic dataset used to build its own ``open_clip.SimpleTokenizer(32)``; the
    package's one tokenizer gives the same ids (also for a caption cut at 32 tokens)."""
    import open_clip

    from dgl_rs.backbone.text import tokenize

    want = open_clip.SimpleTokenizer(context_length=32)(CAPTIONS)
    got = tokenize(CAPTIONS, context_length=32)
    assert torch.equal(got, want)
    assert (got[:, 0] == SOT).all() and (got[-1] != 0).all() and got[-1, -1] == EOT  # cut, still ends with EOT


def test_default_tokenizer_is_open_clip_with_32_tokens():
    import open_clip

    from dgl_rs.backbone.text import tokenize

    ds = SyntheticVideoDataset("static", 4, num_frames=2, seed=0, train=True)
    for i in range(len(ds)):
        caption = ds.records[ds[i]["video_index"]].captions[ds[i]["caption_index"]]
        text = ds[i]["text"]
        assert text.shape == (32,) and text.dtype == torch.long
        assert torch.equal(text, tokenize([caption], context_length=32)[0])
        assert torch.equal(text, open_clip.SimpleTokenizer(context_length=32)([caption])[0])
        # [SOT, one id per word, EOT, 0...]: the synthetic captions are plain lowercase words
        n = len(caption.split())
        assert text[0] == SOT and text[n + 1] == EOT and not text[n + 2:].any()


def test_stills_have_static_captions():
    frames, caps = sample_stills(40, seed=0)
    assert frames.shape == (40, 64, 64, 3) and len(caps) == 40
    assert all(TEMPLATES["static"].match(c) for c in caps)


def test_written_mp4s_are_a_folder_dataset(tmp_path):
    recs = write_synthetic_videos(tmp_path, "temporal", num_videos=4, num_frames=6, seed=0)
    read = read_folder(tmp_path)
    assert [r.captions for r in read] == [r.captions for r in recs]
    ev = EvalSet(read, 6, VideoTransform(64, mean=(0, 0, 0), std=(1, 1, 1)))
    spec = make_specs("temporal", 4, seed=0)[1]
    want = render_video(spec, 6).permute(0, 3, 1, 2).float() / 255
    assert (ev[1]["frames"] - want).abs().mean() < 0.03  # H.264, near-lossless
