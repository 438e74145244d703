"""A CLIP judge through open_clip: the two-way softmax(100 cos) decision of the real study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError


@dataclass
class ClipJudge:
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    device: str = "cpu"

    @classmethod
    def load(cls, model: str, pretrained: str | None = None, device: str = "cpu") -> "ClipJudge":
        """`model` is an open_clip architecture name, or a local directory (loaded as 'local-dir:')."""
        import open_clip

        name = model
        if Path(model).is_dir():
            if not (Path(model) / "open_clip_config.json").is_file():
                raise InputError(f"{model}: missing open_clip_config.json; not an open_clip model directory")
            name, pretrained = f"local-dir:{model}", None
        elif pretrained is not None and Path(pretrained).suffix and not Path(pretrained).is_file():
            raise InputError(f"{pretrained}: CLIP judge checkpoint not found")
        net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        return cls(net.eval(), preprocess, open_clip.get_tokenizer(name), device)

    @torch.inference_mode()
    def image_features(self, images: np.ndarray, batch: int = 256) -> torch.Tensor:
        feats = []
        for i in range(0, len(images), batch):
            x = torch.stack([self.preprocess(Image.fromarray(im)) for im in images[i:i + batch]])
            feats.append(self.model.encode_image(x.to(self.device)).float())
        return torch.nn.functional.normalize(torch.cat(feats), dim=-1).cpu()

    @torch.inference_mode()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        t = self.model.encode_text(self.tokenizer(texts).to(self.device)).float()
        return torch.nn.functional.normalize(t, dim=-1).cpu()

    def prefer_first(self, images: np.ndarray, first: list[str], second: list[str]) -> np.ndarray:
        """P(first text | image) under softmax(100 cos) over the two texts, per image."""
        return self.prefer_first_features(self.image_features(images), first, second)

    def prefer_first_features(self, img: torch.Tensor, first: list[str], second: list[str]) -> np.ndarray:
        """`prefer_first` on image features already computed; one text each, or one per image."""
        a, b = self.text_features(first), self.text_features(second)
        logits = 100.0 * torch.stack([(img * a).sum(-1), (img * b).sum(-1)], dim=-1)
        return logits.softmax(-1)[:, 0].numpy()

    def choose(self, img: torch.Tensor, texts: list[str]) -> np.ndarray:
        """Index of the text each image's features are closest to (argmax of 100 cos)."""
        return (img @ self.text_features(texts).T).argmax(1).numpy()
