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


# ------------------------------------------------------------------ the shifted world
from dataclasses import replace as _replace  # noqa: E402

from dgl_rs.data.synthetic import (  # noqa: E402
    BACKGROUND, DISTRACTOR_COLOURS, SHIFT_STRENGTH, _COLOUR_WORDS, _SHAPE_WORDS, paraphrase,
    render_frame, shift_specs,
)

#: sha256 of captions and frames of the pretraining world (make_specs seed 3, 24 videos of each
#: split, evaluation and training times), computed before the shifted world existed.
PRETRAINING_CHECKSUM = "df7393fe2fc04b581bb237a5847a9b12fa485b897e82598d3aa26cf41b9b0baf"


def test_pretraining_world_is_unchanged_bit_for_bit():
    import hashlib
    h = hashlib.sha256()
    for split in ("static", "temporal", "mixed"):
        for spec in make_specs(split, 24, seed=3):
            h.update(spec.caption.encode())
            h.update(render_video(spec, 8).numpy().tobytes())
            times = segment_times(4, True, np.random.default_rng(1))
            h.update(render_video(spec, 4, 32, times=times).numpy().tobytes())
    assert h.hexdigest() == PRETRAINING_CHECKSUM
    assert make_specs("static", 5, 3, world="pretraining") == make_specs("static", 5, 3)


def test_strength_zero_is_the_pretraining_world():
    for split in ("static", "temporal"):
        for plain, shifted in zip(make_specs(split, 12, 0), make_specs(split, 12, 0, "shifted", 0.0)):
            assert shifted.caption == plain.caption
            assert torch.equal(render_video(shifted, 6), render_video(plain, 6))


def test_shifted_world_is_the_same_videos_and_deterministic_per_seed():
    a, b, c = (make_specs("mixed", 16, seed, "shifted") for seed in (5, 5, 6))
    assert a == b and a != c
    assert all(torch.equal(render_video(x, 4), render_video(y, 4)) for x, y in zip(a, b))
    for plain, shifted in zip(make_specs("mixed", 16, 5), a):  # same contents, same places
        assert (plain.kind, plain.key, plain.time_reversed) == (shifted.kind, shifted.key, shifted.time_reversed)
        assert [o.start for o in plain.objects] == [o.start for o in shifted.objects]
    assert len({s.caption for s in make_specs("temporal", 60, 0, "shifted")}) == 60  # still distinct


@pytest.mark.parametrize("frames", [8, 12])
def test_reversal_property_holds_in_the_shifted_world(frames):
    specs = make_specs("temporal", 18, seed=2, world="shifted")
    captions = {s.caption for s in specs}
    for spec in specs:
        assert spec.shift is not None and spec.reversed().shift == spec.shift
        assert torch.equal(render_video(spec.reversed(), frames), render_video(spec, frames).flip(0))
        assert spec.reversed().caption != spec.caption and spec.reversed().caption in captions


def _neutral(spec):
    """``spec`` with every ingredient of its shift turned off (size factor kept)."""
    sh = spec.shift
    off = _replace(sh, background=tuple(map(float, BACKGROUND)), texture=tuple((*g[:3], 0.0) for g in sh.texture),
                   distractors=(), camera=(0.0, 0.0, 0.0, 0.0, 1.0, 1.0), light=((1.0,) * 3, (1.0,) * 3),
                   noise=0.0, blockiness=0.0, step=1, template=0)
    return _replace(spec, shift=off)


def _one_on(spec, **ingredient):
    base = _neutral(spec)
    return _replace(base, shift=_replace(base.shift, **ingredient))


@pytest.fixture(scope="module")
def shifted_static():
    return make_specs("static", 12, seed=1, world="shifted", strength=1.0)


def test_neutral_shift_renders_the_pretraining_frame(shifted_static):
    spec = shifted_static[0]
    plain = _replace(spec, shift=None)  # same (resized) objects, no shift
    assert np.array_equal(render_frame(_neutral(spec), 0.3), render_frame(plain, 0.3))


def _backdrop(img, spec, u):
    """Pixels of ``img`` that no object covers (objects rendered alone are the only
    non-background pixels of the neutral frame)."""
    return (render_frame(_neutral(spec), u) == BACKGROUND).all(-1)


def test_ingredient_backdrop_colour_and_texture(shifted_static):
    spec = shifted_static[1]
    sh = spec.shift
    img = render_frame(_one_on(spec, background=sh.background), 0.5)
    free = _backdrop(img, spec, 0.5)
    assert np.allclose(img[free], np.round(sh.background), atol=0.51)  # flat, the drawn colour
    img = render_frame(_one_on(spec, background=sh.background, texture=sh.texture), 0.5)
    assert img[free].astype(float).std(axis=0).min() > 3  # textured
    assert len(np.unique(img[free], axis=0)) > 50


def test_ingredient_clutter(shifted_static):
    spec = next(s for s in shifted_static if len(s.shift.distractors) >= 2)
    img = render_frame(_one_on(spec, distractors=spec.shift.distractors), 0.5)
    for d in spec.shift.distractors:
        assert d.colour in DISTRACTOR_COLOURS and d.radius <= 0.07
    found = {name for name, rgb in DISTRACTOR_COLOURS.items() if (img == rgb).all(-1).any()}
    assert found == {d.colour for d in spec.shift.distractors}
    with_clutter = _replace(spec, shift=_replace(spec.shift, distractors=()))
    assert spec.caption == with_clutter.caption  # never captioned
    assert all(name not in spec.caption for name in DISTRACTOR_COLOURS)


def _centroid(img, rgb):
    ys, xs = np.nonzero((img == rgb).all(-1))
    return np.array([xs.mean(), ys.mean()]), len(xs)


def test_ingredient_camera_pan_and_zoom():
    spec = make_specs("static", 1, seed=0, world="shifted", strength=1.0)[0]
    spec = _replace(spec, objects=spec.objects[:1])
    obj = spec.objects[0]
    obj = _replace(obj, wobble=(0.0, 0.0, 0.0))
    spec = _replace(spec, objects=(obj,))
    rgb = COLOURS[obj.colour]
    still = _one_on(spec)
    assert np.allclose(_centroid(render_frame(still, 0.0), rgb)[0], _centroid(render_frame(still, 1.0), rgb)[0])
    panned = _one_on(spec, camera=(-0.07, 0.0, 0.07, 0.0, 1.0, 1.0))  # the camera moves right
    (x0, _), _ = _centroid(render_frame(panned, 0.0), rgb)
    (x1, _), _ = _centroid(render_frame(panned, 1.0), rgb)
    assert x1 < x0 - 0.1 * 64 * 0.9  # so the object moves left by ~0.14 of the frame
    zoomed = _one_on(spec, camera=(0.0, 0.0, 0.0, 0.0, 0.85, 1.15))
    area0, area1 = _centroid(render_frame(zoomed, 0.0), rgb)[1], _centroid(render_frame(zoomed, 1.0), rgb)[1]
    assert area1 / area0 == pytest.approx((1.15 / 0.85) ** 2, rel=0.25)


def test_ingredient_lighting_drift(shifted_static):
    spec = shifted_static[2]
    gains = ((1.3, 1.0, 0.7), (0.7, 1.0, 1.3))
    base0, base1 = render_frame(_neutral(spec), 0.0).astype(float), render_frame(_neutral(spec), 1.0).astype(float)
    lit = _one_on(spec, light=gains)
    img0, img1 = render_frame(lit, 0.0).astype(float), render_frame(lit, 1.0).astype(float)
    assert np.allclose(img0, np.clip(np.round(base0 * gains[0]), 0, 255), atol=1)
    assert np.allclose(img1, np.clip(np.round(base1 * gains[1]), 0, 255), atol=1)


def test_ingredient_noise_and_compression(shifted_static):
    spec = shifted_static[3]
    clean = render_frame(_neutral(spec), 0.5).astype(float)
    noisy = _one_on(spec, noise=12.0)
    img = render_frame(noisy, 0.5).astype(float)
    assert np.array_equal(img, render_frame(noisy, 0.5))  # the same noise every time at a time
    assert not np.array_equal(img, render_frame(noisy, 0.25))  # other noise at another time
    assert 5 < np.abs(img - clean).mean() < 12
    packed = render_frame(_one_on(spec, blockiness=0.5, step=5, background=spec.shift.background,
                                  texture=spec.shift.texture), 0.5)
    assert (packed % 5 == 0).all()  # quantised
    textured = render_frame(_one_on(spec, background=spec.shift.background, texture=spec.shift.texture), 0.5)
    def block_var(x):
        return x.astype(float).reshape(8, 8, 8, 8, 3).std(axis=(1, 3)).mean()
    assert block_var(packed) < 0.7 * block_var(textured)  # blockier: less variation inside each 8-px block


def test_ingredient_new_sizes():
    plain = make_specs("static", 40, seed=0)
    shifted = make_specs("static", 40, seed=0, world="shifted", strength=1.0)
    ratios = [s.objects[0].radius / p.objects[0].radius for p, s in zip(plain, shifted)]
    assert min(ratios) >= 0.55 and max(ratios) <= 1.6
    assert min(ratios) < 0.8 and max(ratios) > 1.25  # sizes the pretraining stills never had
    for p, s in zip(plain, shifted):
        factors = [o.radius / q.radius for o, q in zip(s.objects, p.objects)]
        assert max(factors) == pytest.approx(min(factors), rel=1e-12)  # one factor a video


NEW_WORDS = set(_COLOUR_WORDS.values()) | set(_SHAPE_WORDS.values()) | {"upper", "lower", "side", "there", "is",
                                                                          "travels", "shows", "later", "changes"}


def test_ingredient_paraphrased_captions():
    specs = make_specs("mixed", 120, seed=0, world="shifted", strength=1.0)
    templates = {s.shift.template for s in specs}
    assert templates == {1, 2, 3}  # strength 1: every caption paraphrased
    plain_words = {w for s in make_specs("mixed", 400, 0) for w in re.findall(r"[a-z]+", s.caption)}
    for spec in specs:
        words = set(re.findall(r"[a-z]+", spec.caption))
        assert words & NEW_WORDS and (words & NEW_WORDS).isdisjoint(plain_words), spec.caption
        assert spec.caption != _neutral(spec).caption
    assert paraphrase(specs[0], 2) != paraphrase(specs[0], 3)
    mild = make_specs("static", 200, seed=0, world="shifted")
    share = np.mean([s.shift.template > 0 for s in mild])
    assert abs(share - SHIFT_STRENGTH) < 0.1  # the world's default: a share s of the captions
    with pytest.raises(ValueError, match="template"):
        paraphrase(specs[0], 0)


def test_bad_world_and_strength():
    with pytest.raises(ValueError, match="world"):
        make_specs("static", 3, world="other")
    with pytest.raises(ValueError, match="strength"):
        make_specs("static", 3, world="shifted", strength=1.5)
    assert shift_specs(make_specs("static", 2), "static", 0, 0.0)[0].shift.template == 0


def test_dataset_in_the_shifted_world():
    ds = SyntheticVideoDataset("temporal", 6, num_frames=4, seed=0, train=False, world="shifted")
    assert ds.world == "shifted" and all(s.shift is not None for s in ds.specs)
    assert ds.captions == [s.caption for s in make_specs("temporal", 6, 0, "shifted")]
