"""FID and KID on Inception-v3 features through torch-fidelity, tested offline: a randomly
initialised network of the same architecture stands in for the published weights (it is saved
to a file and loaded through the very path a weights file takes)."""

import numpy as np
import pytest
from PIL import Image

from conftest import make_cell
from editpersist.errors import ConfigError
from editpersist.metrics.fid import FrechetReference
from editpersist.metrics.inception import INCEPTION_DIM, inception_features, load_inception
from editpersist.metrics.kid import KernelReference


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random weights, as a weights file and loaded from it."""
    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as tf

    mp = pytest.MonkeyPatch()
    mp.setattr(tf, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    torch.manual_seed(0)
    fresh = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=None)
    mp.undo()
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(fresh.state_dict(), path)
    return load_inception(str(path)), fresh


def _images(seed: int, n: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_inception_features_are_pool3_features_of_each_image(random_inception):
    loaded, fresh = random_inception
    images = _images(0, 3)
    feats = inception_features(loaded, images, batch=2)
    assert feats.shape == (3, INCEPTION_DIM) and feats.dtype == np.float64 and np.isfinite(feats).all()
    # Batching does not change an image's features, and different images differ.
    np.testing.assert_allclose(inception_features(loaded, images[2:3]), feats[2:3], rtol=1e-4, atol=1e-6)
    assert not np.allclose(feats[0], feats[1])
    # The weights came from the file: the network that wrote it gives the same features.
    np.testing.assert_allclose(inception_features(fresh, images[:1]), feats[:1], rtol=1e-5, atol=1e-7)


def test_distances_on_inception_features_match_torch_fidelitys_own():
    """The study computes FID and KID on these features with metrics/fid.py and metrics/kid.py
    (per state and seed, equal image counts): the same numbers as torch-fidelity's functions on
    the same features (KID: one subset of every image, the cubic kernel scaled by 1/d)."""
    import torch
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(1)
    ref, x = rng.normal(size=(60, 8)), rng.normal(0.3, 1.2, size=(40, 8))
    fid = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(x)),
                                   fid_features_to_statistics(torch.from_numpy(ref)), verbose=False)
    assert FrechetReference.fit(ref).distance(x) == pytest.approx(fid["frechet_inception_distance"], rel=1e-6)
    kid = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(ref), kid_subsets=1, kid_subset_size=40,
                                 verbose=False)
    # torch-fidelity draws 40 of the 60 reference images; ours uses all of them: the same
    # estimand, so the two agree to within the reference's sampling.
    assert KernelReference.fit(ref).distance(x) == pytest.approx(kid["kernel_inception_distance_mean"], abs=0.15)
    assert KernelReference.fit(ref[:40]).scale is None  # the literature's scale: the dimension


def test_a_study_with_inception_features_gets_fid_and_kid_rows_on_equal_counts(monkeypatch, tmp_path):
    """The scored table's quality images, read back in their feature rows' order, give the
    Inception matrix (here a stand-in for the network, run on every image above: 12 numbers that
    depend on the image, so that the test's Fréchet distances stay cheap); persistence rows then
    carry fid_inception and kid_inception, each state on its own 16 images."""
    from editpersist.metrics import inception

    def stand_in(model, images, batch=32):
        flat = images.reshape(len(images), -1).astype(float)
        return flat[:, :12] / 255.0

    monkeypatch.setattr(inception, "inception_features", stand_in)
    from test_evaluation import APPEARANCE, EDITED, _ft, _scores

    from editpersist.evaluation.persistence import persistence_rows
    from editpersist.evaluation.prompts import QualityConfig
    from editpersist.evaluation.scoring import inception_of_model, quality_images
    from editpersist.metrics.task_metrics import fit_inception_references

    states = {"base": 0.0, EDITED: 1.0, _ft("base"): 0.0, _ft(EDITED): 0.5}
    scores = _scores(states)
    quality = scores.table[scores.table["role"] == "quality"]
    images = _images(2, len(quality))
    paths = []
    for i, f in enumerate(quality["feature"]):
        Image.fromarray(images[f]).save(tmp_path / f"{i}.png")
        paths.append(f"{i}.png")
    table = scores.table.copy()
    table.loc[quality.index, "path"] = paths
    table.loc[quality.index, "dir"] = str(tmp_path)
    np.testing.assert_array_equal(quality_images(table), images)
    # Read back by feature row, whatever order the table lists them in.
    np.testing.assert_array_equal(quality_images(table.sample(frac=1, random_state=0)), images)
    feats, ref = inception_of_model(table, QualityConfig(max_captions=2, images_per_caption=1), None, 0)
    np.testing.assert_array_equal(feats, stand_in(None, images))
    assert feats.shape == (len(quality), 12) and ref.shape == (2 * 4, 12)
    scores.inception, scores.inception_references = feats, fit_inception_references(ref)
    rows = {r["metric"]: r for r in persistence_rows(scores, make_cell("toy-sd", "sd", "uce", APPEARANCE, "lora", "s",
                                                                  "unrelated"))}
    kid, fid = rows["kid_inception"], rows["fid_inception"]
    grid = scores.grid("base", None, "kid_inception").ravel()
    assert kid["base"] == pytest.approx(KernelReference.fit(ref).distance(feats[grid]), rel=1e-9)
    assert kid["n_images"] == fid["n_images"] == 16
    assert "fid_inception from 16 images < 2 x 12 feature dims" in fid["note"] and "see kid_inception" in fid["note"]


def test_inception_weights_are_fetched_only_where_downloads_are_allowed(tmp_path):
    import copy
    from pathlib import Path

    import yaml

    from editpersist.config import check_config

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "config/config.yaml").read_text())
    cfg["evaluation"]["quality"]["inception"] = "download"
    with pytest.raises(ConfigError, match=r"evaluation\.quality\.inception: 'download' .* allow_download is false"):
        check_config(copy.deepcopy(cfg))
    with pytest.raises(ConfigError, match="evaluation.quality.inception: weights file .* not found"):
        load_inception(str(tmp_path / "missing.pth"))


class _RunsCode:
    """A pickle that would run code when loaded with weights_only=False."""

    def __reduce__(self):
        return (print, ("this ran",))


def test_a_weights_file_that_holds_code_is_refused_not_run(tmp_path, capsys):
    import torch

    from editpersist.errors import InputError

    path = tmp_path / "evil.pth"
    torch.save({"x": _RunsCode()}, path)
    with pytest.raises(InputError, match=r"^evaluation\.quality\.inception: .*evil\.pth is not a plain weights file"):
        load_inception(str(path))
    assert "this ran" not in capsys.readouterr().out


def test_the_published_weights_are_fetched_once_and_read_as_tensors(tmp_path, monkeypatch, random_inception):
    """'download' fetches torch-fidelity's file into torch's hub cache (here a stand-in of the same
    layout) once, and reads it by the same tensors-only path as a user's file."""
    import torch

    loaded, fresh = random_inception
    fetched = []

    def fake_download(url, dst):
        fetched.append(url)
        torch.save(fresh.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    images = _images(3, 2)
    for _ in range(2):
        np.testing.assert_array_equal(inception_features(load_inception("download"), images),
                                      inception_features(loaded, images))
    assert len(fetched) == 1 and fetched[0].startswith("https://github.com/toshas/torch-fidelity/")
