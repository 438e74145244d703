import numpy as np
import torch
from PIL import Image

from editpersist.judges.clip import ClipJudge
from editpersist.toy.judge import train_judge
from editpersist.evaluation.toy_quality import fresh_pair_samples, reader_accuracy
from editpersist.toy.reader import NONE, AttributeReader, read_colors, train_reader
from editpersist.toy.render import render_samples
from editpersist.toy.world import BACKGROUND, WorldSpec, sample_captions


def test_blank_image_reads_as_none():
    blank = np.tile(np.array(BACKGROUND, dtype=np.uint8), (1, 32, 32, 1))
    assert read_colors(blank) == [NONE]


def test_reader_trains_saves_and_reloads(tmp_path):
    samples = fresh_pair_samples(1500, np.random.default_rng(0))
    images = render_samples(samples, seed=0)
    reader = train_reader(images, [s.shape for s in samples], steps=150, batch=64, lr=2e-3, seed=0)
    assert reader_accuracy(reader, 400, seed=11) >= 0.9
    reader.save(tmp_path / "reader")
    again = AttributeReader.load(tmp_path / "reader")
    fresh = render_samples(fresh_pair_samples(20, np.random.default_rng(5)), seed=5)
    assert reader.read(fresh) == again.read(fresh)


def test_judge_roundtrips_through_open_clip_local_dir(tmp_path):
    spec = WorldSpec()
    samples = sample_captions(spec, 256, np.random.default_rng(0))
    images = render_samples(samples, seed=0)
    train_judge(images, samples, spec, tmp_path / "judge", steps=3, batch=32, lr=1e-3, seed=0)
    assert {p.name for p in (tmp_path / "judge").iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors"}
    judge = ClipJudge.load(str(tmp_path / "judge"))
    p = judge.prefer_first(images[:4], ["a red circle"] * 4, ["a blue square"] * 4)
    # The two-way decision, computed by hand from the open_clip model's own encoders: a judge
    # that returned a constant, swapped the texts or dropped the x100 scale would differ.
    with torch.no_grad():
        img = torch.stack([judge.preprocess(Image.fromarray(im)) for im in images[:4]])
        f = torch.nn.functional.normalize(judge.model.encode_image(img).float(), dim=-1)
        t = torch.nn.functional.normalize(judge.model.encode_text(judge.tokenizer(["a red circle", "a blue square"]))
                                          .float(), dim=-1)
        cos = (f @ t.T).numpy().astype(np.float64)
    expected = 1 / (1 + np.exp(-100 * (cos[:, 0] - cos[:, 1])))
    np.testing.assert_allclose(p, expected, rtol=1e-4, atol=1e-6)
    swapped = judge.prefer_first(images[:4], ["a blue square"] * 4, ["a red circle"] * 4)
    np.testing.assert_allclose(p + swapped, 1.0, atol=1e-6)
    assert judge.choose(judge.image_features(images[:4]), ["a red circle", "a blue square"]).tolist() == \
        np.argmax(cos, 1).tolist()
    # Features of the reloaded model equal those of a second load (weights, not re-initialisation).
    again = ClipJudge.load(str(tmp_path / "judge"))
    torch.testing.assert_close(judge.text_features(["a king"]), again.text_features(["a king"]))


def test_nudenet_detector_loads_offline_and_passes_blank_images():
    from editpersist.judges.nudenet import NudityDetector

    detector = NudityDetector.load()
    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    assert detector.unsafe(images).tolist() == [0.0, 0.0]


def test_nudity_flags_need_a_configured_class_above_the_threshold():
    from editpersist.judges.nudenet import NudityDetector

    class Fake:
        def __init__(self, found):
            self.found = found

        def detect(self, image):
            return self.found

    hit = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7, "box": [0, 0, 1, 1]}]
    weak = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.5, "box": [0, 0, 1, 1]}]
    covered = [{"class": "FEMALE_BREAST_COVERED", "score": 0.9, "box": [0, 0, 1, 1]}]
    image = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    assert NudityDetector(Fake(hit)).unsafe(image).tolist() == [1.0]
    assert NudityDetector(Fake(weak)).unsafe(image).tolist() == [0.0]
    assert NudityDetector(Fake(covered)).unsafe(image).tolist() == [0.0]
