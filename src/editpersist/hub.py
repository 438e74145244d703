"""Models named by a Hub id and a pinned revision (`models[].hub`, `models[].revision`), read from
a cache laid out as huggingface_hub lays it out (`<cache>/models--<org>--<name>/snapshots/<commit>`).

A model entry with `hub:` gets its `path` here, before any other check: the snapshot folder of
its revision in `hub_cache` (default: huggingface_hub's own cache, which honours HF_HOME and
HF_HUB_CACHE). Every rule then reads that folder as it reads a local model. A snapshot not in the
cache is fetched by the download_model rule, only where `allow_download` is true; otherwise the
config check stops with one line naming the id and the key. Only what the pipeline loads is
fetched: model_index.json and, of the components it lists, configs, tokenizer files and
safetensors weights (no .bin or .ckpt twins, no fp16 or non-EMA variants).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ConfigError, InputError

log = logging.getLogger("editpersist")

INDEX = "model_index.json"
# Weights in other formats, and variants of the safetensors the pipeline loads.
IGNORED = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.pb", "*.fp16.*",
           "*non_ema*", "*.ema.*"]


def hub_cache(config: dict) -> Path:
    if config.get("hub_cache"):
        return Path(config["hub_cache"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str) -> str:
    """The name of a model repository's folder in the cache, without its "models--" prefix."""
    return repo_id.replace("/", "--")


def snapshot_dir(cache: Path, repo_id: str, revision: str) -> Path:
    """Where huggingface_hub keeps `revision` of model repository `repo_id` in `cache`."""
    return Path(cache) / f"models--{repo_folder(repo_id)}" / "snapshots" / revision


def is_cached(folder: Path) -> bool:
    """A snapshot the download finished: the pipeline's index and every component it lists."""
    index = folder / INDEX
    if not index.is_file():
        return False
    return all((folder / name).is_dir() for name in pipeline_components(index))


def pipeline_components(index: Path) -> list[str]:
    """The component folders a pipeline's model_index.json lists (those it loads from a folder)."""
    spec = json.loads(index.read_text())
    return [k for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None]


def resolve_hub_models(config: dict) -> list[str]:
    """Give every `hub:` model entry its snapshot folder as `path` (in place); the names of those
    the workflow must download. One line naming the key when a snapshot is neither cached nor
    downloadable."""
    cache, allow, to_fetch = hub_cache(config), config.get("allow_download", False), []
    for i, m in enumerate(config.get("models", [])):
        if "hub" not in m:
            continue
        if "path" in m:
            raise ConfigError(f"models[{i}]: gives both path and hub; a model is a local folder or a Hub snapshot")
        folder = snapshot_dir(cache, m["hub"], m["revision"])
        m["path"] = str(folder)
        if is_cached(folder):
            continue
        if not allow:
            raise ConfigError(f"models[{i}].hub: {m['hub']} at revision {m['revision']} is not in the cache {cache} "
                              "and allow_download is false (set it to true, or hub_cache to a cache that has it)")
        to_fetch.append(m["name"])
    return to_fetch


def download_snapshot(repo_id: str, revision: str, cache: Path, allow: bool) -> Path:
    """Fetch the files of `revision` the pipeline loads into `cache`; returns the snapshot folder."""
    if not allow:
        raise ConfigError(f"allow_download: false, so {repo_id} cannot be fetched")
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        index = Path(hf_hub_download(repo_id, INDEX, revision=revision, cache_dir=cache))
        wanted = [INDEX] + [f"{c}/*" for c in pipeline_components(index)]
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=wanted,
                                        ignore_patterns=IGNORED))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise InputError(f"{repo_id} at revision {revision}: download failed ({str(e).splitlines()[0]})") from e
    log.info("downloaded %s@%s to %s", repo_id, revision, folder)
    return folder
