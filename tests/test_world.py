from pathlib import Path

import numpy as np
import pytest

from editpersist.toy.reader import read_colors
from editpersist.toy.render import render_samples, render_shape
from editpersist.toy.world import COLORS, SHAPES, Sample, WorldSpec, sample_captions


def test_render_is_deterministic_by_seed():
    samples = sample_captions(WorldSpec(), 16, np.random.default_rng(0))
    a = render_samples(samples, seed=3)
    b = render_samples(samples, seed=3)
    c = render_samples(samples, seed=4)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_render_of_one_image_does_not_depend_on_the_others():
    samples = sample_captions(WorldSpec(), 8, np.random.default_rng(1))
    full = render_samples(samples, 5)
    assert np.array_equal(full[:4], render_samples(samples[:4], 5))
    # Another sample in position 3 changes that image only.
    other = Sample("a green cross", "green", "cross") if samples[3].shape != "cross" else Sample("a red circle", "red",
                                                                                                "circle")
    changed = render_samples(samples[:3] + [other] + samples[4:], 5)
    assert np.array_equal(np.delete(changed, 3, 0), np.delete(full, 3, 0))
    assert not np.array_equal(changed[3], full[3]) and read_colors(changed[3:4]) == [other.color]


@pytest.mark.parametrize("color", list(COLORS))
@pytest.mark.parametrize("shape", SHAPES)
def test_every_pair_renders_with_its_colour(color, shape):
    img = render_shape(color, shape, np.random.default_rng(0))
    assert read_colors(img[None]) == [color]


def test_unknown_shape_is_rejected():
    with pytest.raises(ValueError, match="unknown toy shape 'star'"):
        render_shape("red", "star", np.random.default_rng(0))


def test_world_has_required_variety_and_holds_out_pairs():
    spec = WorldSpec()
    assert len(COLORS) >= 4 and len(SHAPES) >= 3
    assert set(spec.held_out_pairs) <= set(spec.all_pairs())
    assert not set(spec.held_out_pairs) & set(spec.training_pairs())
    samples = sample_captions(spec, 3000, np.random.default_rng(0))
    explicit = {(s.color, s.shape) for s in samples if s.color in s.caption.split()}
    assert not explicit & set(spec.held_out_pairs)


def test_caption_distribution_encodes_defaults_roles_and_imbalance():
    spec = WorldSpec()
    samples = sample_captions(spec, 6000, np.random.default_rng(0))
    circles = [s for s in samples if s.caption.split()[-1] == "circle" and len(s.caption.split()) in (2, 5)]
    bare = [s for s in circles if s.caption in ("a circle", "a photo of a circle")]
    assert bare and all(s.color == "red" for s in bare)
    kings = [s for s in samples if s.caption.endswith("king")]
    assert kings and all(s.shape == "square" for s in kings)
    triangles = [s for s in samples if s.caption.endswith(" triangle") and s.caption.split()[-2] in ("a",)]
    share_yellow = np.mean([s.color == "yellow" for s in triangles])
    assert 0.8 < share_yellow < 0.97


def test_held_out_pairs_are_no_edit_destination_debias_attribute_or_fine_tune_subject():
    import yaml

    from editpersist.tasks.toy import toy_cases

    spec = WorldSpec()
    config = yaml.safe_load((Path(__file__).parents[1] / "config/config.yaml").read_text())
    used = {(s["color"], s["class"]) for s in config["finetune_data"]["subjects"]}
    for cases in toy_cases(spec).values():
        for case in cases:
            for request in case.requests:
                words = (request.target or "").split()
                used |= {(c, s) for c, s in zip(words, words[1:])}
                used |= {(a, request.concept) for a in request.attributes or ()}
    assert ("blue", "circle") in used and ("blue", "triangle") in used and ("purple", "square") in used
    assert not used & set(spec.held_out_pairs)
