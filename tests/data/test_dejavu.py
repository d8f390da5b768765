"""The deja-vu filter: copies are caught with the name of what they copy, skin-tone siblings are not, the index
persists and refuses another descriptor version, thresholds are configurable, the verifier's features mean what
they say."""

import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from incasa.data import dejavu
from incasa.data import dejavu_verify as dv
from incasa.data.dejavu_train import (STYLE_SETS, TRANSFORMS, build_pairs, parse_sets, render_sets, t_jitter,
                                      t_jitter_wide, t_text, t_text_wide)
from tests.data.helpers import picture

SKIN = {"light": (247, 222, 206), "medium": (198, 150, 110), "dark": (112, 78, 60)}


def figure(skin: str, seed: int = 0) -> Image.Image:
    """A cartoon person on white: a face and two hands in ``skin``, hair, a shirt and eyes (64×64)."""
    r = random.Random(seed)
    im = Image.new("RGB", (64, 64), (255, 255, 255))
    d = ImageDraw.Draw(im)
    shirt = tuple(r.randint(0, 200) for _ in range(3))
    d.rectangle((16, 38, 48, 62), fill=shirt, outline=(40, 40, 40))
    d.ellipse((20, 8, 44, 36), fill=SKIN[skin], outline=(60, 40, 30))
    d.chord((19, 5, 45, 24), 180, 360, fill=(90, 60, 20))
    d.ellipse((8, 40, 16, 48), fill=SKIN[skin])
    d.ellipse((48, 40, 56, 48), fill=SKIN[skin])
    for x in (27, 35):
        d.ellipse((x, 19, x + 3, 23), fill=(30, 30, 30))
    d.arc((26, 22, 38, 31), 20, 160, fill=(120, 40, 40), width=2)
    return im


@pytest.fixture(scope="module")
def index():
    idx = dejavu.SeenIndex(None)
    for i, im in enumerate([figure("light", 1), picture(10), picture(11), picture(12), figure("dark", 2)]):
        idx.add(f"orig{i}", f"sha{i}", dejavu.describe(im), "run-a")
    return idx


@pytest.mark.parametrize("name", ["crop", "flip", "jpeg", "resize", "rotate"])
def test_a_transformed_copy_is_caught_and_names_its_original(index, name):
    copy = TRANSFORMS[name](figure("light", 1), random.Random(1))
    hit = index.find("other-sha", dejavu.describe(copy), dejavu.DejaVuConfig())
    assert hit is not None and hit[0] == "near_duplicate" and hit[1] == "orig0", (name, hit)
    assert "P(copy)" in hit[2]


@pytest.mark.parametrize("name", ["jitter", "text"])
def test_weaker_transforms_still_rank_the_original_first(index, name):
    # text overlays and strong colour jitter are the verifier's weak spots (benchmarks/dejavu.py): at the default
    # threshold some copies pass, but the original is still the best-scored candidate, far above the others
    for seed in range(3):
        scored = index.verified(dejavu.describe(TRANSFORMS[name](figure("light", 1), random.Random(seed))),
                                dejavu.DejaVuConfig())
        assert scored[0][0] == "orig0" and all(p < 0.01 for _, _, p in scored[1:]), (name, seed, scored)


def test_a_skin_tone_sibling_is_not_a_copy(index):
    cfg = dejavu.DejaVuConfig()
    for skin in ("medium", "dark"):
        d = dejavu.describe(figure(skin, 1))
        scored = index.verified(d, cfg)
        assert "orig0" in [key for key, _, _ in scored]  # the embedding does find the sibling...
        assert all(p < cfg.verify_threshold for _, _, p in scored), (skin, scored)  # ...and the verifier turns it down
        assert index.find("other-sha", d, cfg) is None


def test_exact_bytes_are_an_exact_duplicate(index):
    assert index.find("sha2", dejavu.describe(picture(999)), dejavu.DejaVuConfig()) == \
        ("exact_duplicate", "orig2", "same sha256")


def test_thresholds_are_configurable_and_checked(index):
    d = dejavu.describe(TRANSFORMS["jpeg"](figure("light", 1), random.Random(0)))
    p = index.verified(d, dejavu.DejaVuConfig())[0][2]
    assert index.find("x", d, dejavu.DejaVuConfig(verify_threshold=min(1.0, p + 1e-6))) is None
    assert index.find("x", d, dejavu.DejaVuConfig(verify_threshold=p)) is not None
    assert index.find("x", d, dejavu.DejaVuConfig(min_cosine=1.0)) is None  # no candidate is close enough
    for bad in ({"verify_threshold": 1.5}, {"min_cosine": -2.0}, {"num_neighbours": 0}, {"embed_threshold": 2.0},
                {"hash_threshold": 65}):
        with pytest.raises(ValueError):
            dejavu.DejaVuConfig(**bad)


def test_the_index_persists_across_two_runs_and_refuses_another_version(tmp_path):
    folder = tmp_path / "index"
    first = dejavu.SeenIndex(folder)
    first.add("a.png", "sha-a", dejavu.describe(figure("light", 5)), "run1")
    first.add("b.png", "sha-b", dejavu.describe(picture(50)), "run1")
    first.commit(["run1"])
    second = dejavu.SeenIndex(folder)  # a later run, another process
    assert len(second) == 2 and second.runs == ["run1"]
    assert np.array_equal(second.thumbs[0], first.thumbs[0])
    copy = TRANSFORMS["crop"](figure("light", 5), random.Random(1))
    assert second.find("sha-new", dejavu.describe(copy), dejavu.DejaVuConfig())[1] == "a.png"
    second.add("c.png", "sha-c", dejavu.describe(picture(51)), "run2")
    second.commit(["run2"])
    third = dejavu.SeenIndex(folder)
    assert len(third) == 3 and third.runs == ["run1", "run2"]
    third.drop_run("run2")
    assert len(third) == 2
    current = json.loads((folder / "CURRENT").read_text())
    (folder / "CURRENT").write_text(json.dumps({**current, "descriptor": "raw548-lw64-v1"}))
    with pytest.raises(ValueError, match="use a new --index folder"):
        dejavu.SeenIndex(folder)


def test_alignment_undoes_a_crop_and_the_colour_fit_undoes_jitter():
    im = figure("medium", 7)
    o = dejavu.thumbnail(im).astype(np.float32) / 255
    crop = dejavu.thumbnail(im.crop((4, 3, 60, 59))).astype(np.float32) / 255
    cc, warped, valid = dv.align(crop, o)
    assert cc > 0.95 and valid.mean() > 0.8
    assert np.abs(warped - crop)[valid].mean() < 0.03  # aligned to within interpolation error
    darker = np.clip(o * 0.8 + 0.05, 0, 1)
    fitted, coef = dv.colour_fit(darker, o, np.ones(o.shape[:2], bool))
    # exact up to the weak ridge towards "no change" that keeps grey pictures well-posed
    assert np.abs(fitted - darker).max() < 0.01 and abs(coef[0] - 0.8) < 0.05 and abs(coef[3] - 0.05) < 0.03


def test_the_aligned_pair_shows_a_recoloured_region_that_a_copy_lacks():
    light, medium = dejavu.thumbnail(figure("light", 4)), dejavu.thumbnail(figure("medium", 4))
    copy, sibling = dv.align_pair(light, light), dv.align_pair(medium, light)
    diff = lambda a: np.abs(a.query - a.fitted).max(-1)[a.valid]  # noqa: E731
    assert copy.ecc > 0.999 and copy.valid.mean() > 0.9 and diff(copy).max() < 0.02
    assert (diff(sibling) > 0.08).mean() > 0.03  # the face and hands: colour no global change explains
    p = dv.verify(light, [light, light], [1.0, 0.99])
    q = dv.verify(medium, [light], [0.99])
    assert p.shape == (2,) and p.min() > 0.9 and q[0] < 0.1


def test_a_rival_that_fits_as_well_discounts_a_candidate_and_twins_are_no_rivals():
    w, floor = dv.RIVAL_WEIGHT, dv.RIVAL_FLOOR
    # two siblings that both look like copies (an unindexed skin tone): neither gains anything over the other
    assert np.allclose(dv.explain_away(np.array([3.0, 3.0])), [3.0, 3.0])
    # a copy that fits its original far better than the runner-up gains, the runner-up loses; the order is kept
    out = dv.explain_away(np.array([3.0, -1.0]))
    assert np.allclose(out, [3.0 + w * 4.0, -1.0 - w * 4.0]) and out[0] > out[1]
    # a lone candidate is compared with the floor; rivals below the floor count as the floor
    assert np.allclose(dv.explain_away(np.array([1.0])), [1.0 + w * (1.0 - floor)])
    assert np.allclose(dv.explain_away(np.array([1.0, -50.0]))[0], 1.0 + w * (1.0 - floor))
    # a pixel-identical twin of the best candidate is the same picture, not a rival
    same = np.array([[True, True, False], [True, True, False], [False, False, True]])
    assert np.allclose(dv.explain_away(np.array([3.0, 3.0, 0.0]), same)[:2], 3.0 + w * 3.0)
    assert len(dv.explain_away(np.zeros(0))) == 0


def test_made_up_skin_tones_recolour_the_skin_only_and_discount_another_tone_more_than_a_copy():
    medium = dejavu.thumbnail(figure("medium", 5))
    mask = dv.skin_mask(medium)
    assert 0.05 < mask.mean() < 0.4  # the face and the hands, not the shirt, hair, eyes or the white ground
    rivals = dv.tone_rivals(medium)
    assert len(rivals) == len(dv.SKIN_TONE_STEPS)
    for rival, step in zip(rivals, dv.SKIN_TONE_STEPS):
        assert np.array_equal(rival[~mask], medium[~mask])  # only the skin changes
        moved = rival[mask].astype(float).mean() - medium[mask].astype(float).mean()
        assert np.sign(moved) == np.sign(step)  # a step up is lighter, a step down darker
    # no skin, no rivals: a grey square on white, and a yellow (default-tone) face
    grey = np.full((48, 48, 3), 255, np.uint8)
    grey[10:38, 10:38] = 128
    yellow = np.full((48, 48, 3), 255, np.uint8)
    yellow[8:40, 8:40] = (252, 200, 40)
    assert dv.tone_rivals(grey) == [] and dv.tone_rivals(yellow) == []
    assert dv.tone_penalty(3.0, np.zeros(0)) == 0.0
    assert dv.tone_penalty(3.0, np.array([-5.0, 0.0])) == 0.0  # every rival far worse: no penalty
    assert dv.tone_penalty(3.0, np.array([3.0])) == dv.TONE_RIVAL_WEIGHT * dv.TONE_RIVAL_MARGIN
    # a JPEG copy of the indexed figure loses less to the made-up tones than the figure in another tone does
    light = dejavu.thumbnail(figure("light", 5))
    copy = dejavu.thumbnail(TRANSFORMS["jpeg"](figure("medium", 5), random.Random(1)))
    verifier = dv.load_verifier()

    def penalty(query: np.ndarray, original: np.ndarray) -> float:
        raw = verifier.logit([dv.pack(dv.align_pair(query, original), 0.99)])[0]
        rival = verifier.logit([dv.pack(dv.align_pair(query, r), 0.99) for r in dv.tone_rivals(original)])
        return dv.tone_penalty(raw, rival)

    assert penalty(copy, medium) < penalty(light, medium)
    # verify() subtracts the penalty from the joint verdict; skin_tones=False (DejaVuConfig.tone_rivals) skips it
    plain = dv.verify(light, [medium], [0.99], skin_tones=False)
    logit = dv.explain_away(verifier.logit([dv.pack(dv.align_pair(light, medium), 0.99)]))[0]
    assert np.isclose(plain[0], 1 / (1 + np.exp(-logit)))
    assert np.isclose(dv.verify(light, [medium], [0.99])[0], 1 / (1 + np.exp(-(logit - penalty(light, medium)))))
    idx = dejavu.SeenIndex(None)
    idx.add("medium", "sha", dejavu.describe(figure("medium", 5)), "run-a")
    query = dejavu.describe(figure("light", 5))
    off = idx.verified(query, dejavu.DejaVuConfig(tone_rivals=False))[0][2]
    assert np.isclose(off, plain[0], atol=1e-6) and idx.verified(query, dejavu.DejaVuConfig())[0][2] < off


def test_a_mirror_twin_is_the_same_picture_not_a_rival_but_a_mirrored_other_tone_is_a_rival():
    light, medium = dejavu.thumbnail(figure("light", 3)), dejavu.thumbnail(figure("medium", 3))
    mirror = np.ascontiguousarray(light[:, ::-1])
    assert dv.twins(light, light.copy()) and dv.twins(light, mirror) and dv.twins(mirror, light)
    assert not dv.twins(light, np.ascontiguousarray(medium[:, ::-1])) and not dv.twins(light, medium)
    assert not dv.twins(light, light[:40])  # another size is another picture
    # a copy judged against its original and that original's mirror twin: both fit it equally (both orientations
    # are aligned), and neither discounts the other — each gets what a lone candidate gets
    query = dejavu.thumbnail(TRANSFORMS["jpeg"](figure("light", 3), random.Random(4)))
    lone = dv.verify(query, [light], [0.99])
    pair = dv.verify(query, [light, mirror], [0.99, 0.99])
    assert np.allclose(pair, lone[0], atol=1e-6)
    # counted as rivals (what explain_away did before), they would cancel each other's lift
    logit = dv.load_verifier().logit([dv.pack(dv.align_pair(query, o), 0.99) for o in (light, mirror)])
    rivals = 0.5 * (1 + np.tanh(0.5 * dv.explain_away(logit)))
    assert (rivals < pair - 1e-3).all()


def test_a_mirrored_copy_is_aligned_against_the_mirrored_original_and_rotation_corners_are_masked():
    im = figure("light", 6)
    o = dejavu.thumbnail(im)
    mirrored = dv.align_pair(dejavu.thumbnail(TRANSFORMS["flip"](im, random.Random(0))), o)
    assert mirrored.mirrored and mirrored.ecc > 0.99
    rotated = dv.align_pair(dejavu.thumbnail(im.rotate(10, resample=Image.BILINEAR, fillcolor=(255, 0, 255))), o)
    assert not rotated.mirrored and rotated.ecc > 0.9
    # the magenta fill in the corners is outside the warped original: masked, so never judged as a change
    assert not rotated.valid[0, 0] and not rotated.valid[-1, -1] and rotated.valid.mean() > 0.7
    image = dv.network_input(*(np.stack([x]) for x in dv.pack(rotated, 1.0)[:4]))
    assert image.shape == (1, dv.IMAGE_CHANNELS, dejavu.THUMB, dejavu.THUMB)
    assert float(image[0, :, 0, 0].abs().sum()) == 0.0  # outside the mask every channel is zero


def test_the_shipped_verifier_loads_and_a_wrong_version_is_refused(tmp_path):
    v = dv.load_verifier()
    # six small nets (two recipes at three seeds, session 28): ~50 k weights each, 1.2 MB in all
    assert len(v.nets) == 6 and sorted({net.num_scalars for net in v.nets}) == [7, 14]
    assert all(sum(p.numel() for p in net.parameters()) < 60_000 for net in v.nets)
    assert dv.VERIFIER_FILE.stat().st_size < 2_000_000
    net = dv.make_net()
    bad = tmp_path / "v.safetensors"
    from safetensors.torch import save_file

    save_file({k: t.contiguous() for k, t in net.state_dict().items()}, str(bad), metadata={"version": "ecc48-lr-v7"})
    with pytest.raises(ValueError, match="retrain it"):
        dv.load_verifier(bad)


def test_row_fields_round_trip_through_from_row():
    im = figure("dark", 9)
    rgb = dejavu.small_rgb(im)
    row = dejavu.row_fields(im, rgb, dejavu.raw_descriptor(rgb))
    d, e = dejavu.from_row(row), dejavu.describe(im)
    assert d.phash == e.phash and d.phash_flip == e.phash_flip
    assert np.allclose(d.embedding, e.embedding) and np.array_equal(d.thumb, e.thumb)


def test_the_training_jitter_reaches_past_the_benchmark_range_which_stays_as_it_was():
    # on a flat grey picture contrast, saturation and hue change nothing: the mean is 100 x the brightness factor
    grey = Image.new("RGB", (16, 16), (100, 100, 100))
    mean = lambda tf, seed: float(np.asarray(tf(grey, random.Random(seed)), np.float32).mean())  # noqa: E731
    bench = [mean(t_jitter, s) for s in range(60)]
    wide = [mean(t_jitter_wide, s) for s in range(60)]
    assert 69 <= min(bench) and max(bench) <= 131  # brightness 0.7-1.3: the benchmark's jitter is untouched
    assert min(wide) < 65 and max(wide) > 135  # brightness 0.55-1.45


def test_the_training_text_overlay_reaches_past_the_benchmark_one_which_stays_as_it_was():
    # on a white picture the overlay is the only change: its bounding box says where and how large the text was
    white = Image.new("RGB", (64, 64), "white")

    def box(tf, seed):
        ink = np.asarray(tf(white, random.Random(seed))).min(axis=2) < 250
        ys, xs = np.nonzero(ink)
        return (xs.min(), ys.min(), ys.max() - ys.min()) if len(xs) else (0, 0, 0)

    bench = [box(t_text, s) for s in range(80)]
    wide = [box(t_text_wide, s) for s in range(80)]
    assert max(x for x, _, _ in bench) <= 32 and max(h for _, _, h in bench) <= 10  # left half, <= 0.2 x 64 px font
    assert max(x for x, _, _ in wide) > 40 and max(h for _, _, h in wide) > 12  # anywhere, larger, outlined
    assert np.array_equal(np.asarray(t_text_wide(white, random.Random(3))),
                          np.asarray(t_text_wide(white, random.Random(3))))  # a seed gives the same copy


def test_training_pairs_pair_each_copy_with_its_original_and_its_look_alikes():
    images = [figure(skin, 3) for skin in SKIN] + [picture(30 + i) for i in range(5)]
    pairs = build_pairs(images, 6, seed=0, progress=False, transforms={"jitter": t_jitter_wide})
    n = len(pairs["label"])
    assert pairs["query"].shape == (n, dejavu.THUMB, dejavu.THUMB, 3)
    assert pairs["scalars"].shape == (n, len(dv.SCALAR_NAMES))
    for q in np.unique(pairs["qid"]):
        labels = pairs["label"][pairs["qid"] == q]
        assert labels.sum() <= 1 and len(labels) <= 4  # one original at most among its 4 nearest
    assert pairs["label"].sum() >= 5 and (pairs["label"] == 0).sum() >= 5  # the skin tones are each other's negatives


def test_residual_statistics_tell_a_global_colour_change_from_a_recoloured_skin():
    light = dejavu.thumbnail(figure("light", 4))
    darker = (light.astype(np.float32) * 0.85 + 10).astype(np.uint8)  # a global change the colour fit undoes
    medium = dejavu.thumbnail(figure("medium", 4))
    stats = {name: dv.residual_statistics(*(np.stack([x]) for x in dv.pack(dv.align_pair(q, light), 1.0)[:4]))[0]
             for name, q in (("copy", darker), ("sibling", medium))}
    mean, top10, p99 = (dv.SCALAR_NAMES.index(n) - 7 for n in ("residual_mean", "residual_top10_share", "residual_p99"))
    assert stats["copy"][mean] < 0.01 and stats["sibling"][mean] > 3 * stats["copy"][mean]
    assert stats["sibling"][p99] > 0.1 > stats["copy"][p99]
    assert 0.1 <= stats["sibling"][top10] <= 1.0  # a share of the energy
    # pack carries them after the seven alignment scalars, in SCALAR_NAMES order
    packed = dv.pack(dv.align_pair(medium, light), 0.9)
    assert packed[4].shape == (len(dv.SCALAR_NAMES),) and np.allclose(packed[4][7:], stats["sibling"], atol=1e-6)


def test_an_ensemble_file_round_trips_and_its_verdict_is_the_members_mean(tmp_path):
    import torch

    torch.manual_seed(0)
    nets = [dv.make_net(7).eval(), dv.make_net().eval()]
    path = tmp_path / "v.safetensors"
    dv.save_verifier(path, nets, {"command": "test"})
    loaded = dv.load_verifier(path)
    assert [n.num_scalars for n in loaded.nets] == [7, len(dv.SCALAR_NAMES)]
    light = dejavu.thumbnail(figure("light", 4))
    other = dejavu.thumbnail(picture(3))
    packed = [dv.pack(dv.align_pair(light, light), 1.0), dv.pack(dv.align_pair(other, light), 0.7)]
    members = [dv.Verifier((n,)).logit(packed) for n in nets]
    assert np.allclose(loaded.logit(packed), np.mean(members, 0), atol=1e-5)
    with pytest.raises(ValueError, match="num_scalars"):
        dv.make_net(len(dv.SCALAR_NAMES) + 1)


def _svg(fill: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
            f'<circle cx="18" cy="18" r="16" fill="{fill}"/></svg>')


def test_training_sets_are_chosen_by_name_and_a_missing_one_says_which_npm_pack_to_run(tmp_path):
    assert parse_sets("emojione, fluent-modern") == ("emojione", "fluent-modern")
    with pytest.raises(ValueError, match="unknown emoji set.*noto.*choose from"):
        parse_sets("twemoji,noto")  # the benchmark's style is no training set
    for name, svgs in (("fluent-modern", ["#fc0", "#c60"]), ("emojione", ["#fc0", "#06c"])):
        folder = tmp_path / STYLE_SETS[name][0]
        folder.mkdir(parents=True)
        for k, fill in enumerate(svgs):
            (folder / f"{k}.svg").write_text(_svg(fill))
    images, names = render_sets(tmp_path, size=16, sets=("fluent-modern", "emojione"))
    # the yellow circle is drawn by both sets with the very same pixels: kept once, under the first set
    assert names == ["fluent-modern/0", "fluent-modern/1", "emojione/1"] and images[0].size == (16, 16)
    assert np.asarray(images[2])[8, 8, 2] > 150  # the blue one, rendered and flattened to RGB
    with pytest.raises(ValueError, match=r"'twemoji'.*npm pack @twemoji/svg@15\.0\.0"):
        render_sets(tmp_path, size=16, sets=("emojione", "twemoji"))
