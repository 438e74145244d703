"""Inception-v3 features for FID and KID as the literature reports them (real models).

The features are the 2048-d pool3 activations of torch-fidelity's Inception-v3, the TF-ported
network of Heusel et al.'s FID code with TensorFlow 1.x's bilinear resize to 299 x 299, so
`fid_inception` and `kid_inception` are comparable with published figures (KID: Bińkowski et
al.'s cubic kernel scaled by the dimension, metrics/kid.py's default). The distances themselves
are computed by metrics/fid.py and metrics/kid.py, per state and fine-tune seed on equal image
counts like every distance of the study.

`evaluation.quality.inception` says where the network's weights come from: a weights file
(torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`), or "download", which lets
torch-fidelity fetch that file and is refused unless `allow_download` is set (config.py). Null:
no Inception metrics (the toy world, whose 32-pixel shapes Inception was never meant for).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, InputError

DOWNLOAD = "download"
INCEPTION_DIM = 2048


def load_inception(source: str, device: str = "cpu"):
    """torch-fidelity's FeatureExtractorInceptionV3 returning pool3 features, its weights read from
    the file `source` or, with `source` "download", from torch-fidelity's published file, fetched
    into torch's hub cache once."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

    if source == DOWNLOAD:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(URL_INCEPTION_V3).name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path))
        source = str(path)
    if not Path(source).is_file():
        raise ConfigError(f"evaluation.quality.inception: weights file {source} not found (or 'download' with "
                          "allow_download: true)")
    # torch-fidelity unpickles a weights file with no restriction (weights_only off), which runs any
    # code a pickle holds: the file is read here as tensors only, and torch-fidelity is handed a
    # copy that holds nothing else.
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, or not a weights file at all
        raise InputError(f"evaluation.quality.inception: {source} is not a plain weights file ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "inception.pth")
        return FeatureExtractorInceptionV3("inception-v3-compat", [str(INCEPTION_DIM)],
                                           feature_extractor_weights_path=str(Path(tmp) / "inception.pth")).to(device)


@torch.no_grad()
def inception_features(model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Pool3 features [N, 2048] (float64) of NHWC uint8 images of any size."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).permute(0, 3, 1, 2).to(device)
        out.append(model(x)[0].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, INCEPTION_DIM))
