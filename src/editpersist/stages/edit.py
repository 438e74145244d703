"""One edit job: load a model state, build the editor from config, write the edit delta."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..editors import EDITORS
from ..editors.base import EditContext, EditDelta, Editor, MeterSpec
from ..errors import ConfigError
from ..families import get_family
from ..io import atomic_dir
from ..judges.clip import ClipJudge
from ..sampling import SamplingConfig, generate, stream_seed
from ..families.base import save_weights
from ..states import apply_undoable, load_model_state
from ..tasks.cases import EditCase
from ..tasks.requests import EditRequest, attribute_prompt
from ..metrics.reader_metrics import matches, text_attributes
from ..toy.reader import AttributeReader, read_colors

log = logging.getLogger("editpersist")


def source_meter(family, sampling: SamplingConfig, n_images: int, seed: int, read):
    """A meter of the model as it is now: `read(images, request)` of `n_images` generated images
    of the request's source prompt, with seeds of the meter's own stream."""

    def meter(pipe, request: EditRequest):
        images, _ = generate(pipe, family, [request.source], n_images, sampling, base_seed=seed)
        return read(images, request)

    return meter


def attribute_shares_of(classify):
    """The UCE debias reading: the share of images `classify(images, request)` (an attribute
    index per image, -1 for none) assigns to each attribute."""

    def read(images, request: EditRequest) -> list[float]:
        choice = np.asarray(classify(images, request))
        return [float(np.mean(choice == k)) for k in range(len(request.attributes))]

    return read


def target_share_of(shows_target):
    """The uce-persist reading: the share of images `shows_target(images, request)` (a bool per
    image) says show the edit's target."""
    return lambda images, request: float(np.mean(shows_target(images, request)))


def reader_shows_target(reader: AttributeReader):
    """The toy world's ground truth: the colour and shape the target names, read from the pixels."""

    def shows(images, request: EditRequest) -> list[bool]:
        wanted = text_attributes(request.target)
        return [matches(read, wanted) for read in reader.read(images)]

    return shows


def judge_shows_target(judge: ClipJudge):
    """The judge's two-way choice between the target and what the source showed before."""
    return lambda images, r: judge.choose(judge.image_features(images), [r.target, r.before]) == 0


def judge_classifier(judge: ClipJudge):
    """The judge's argmax over the source prompt with each attribute written next to its concept
    (100 * cos, as in the two-way decision): how the evaluation's debias_score classifies too."""
    return lambda images, r: judge.choose(
        judge.image_features(images), [attribute_prompt(a, r.source, r.concept) for a in r.attributes])


def reader_classifier(images, request: EditRequest) -> list[int]:
    """The toy world's ground truth: the colour drawn, read from the pixels."""
    return [request.attributes.index(c) if c in request.attributes else -1 for c in read_colors(images)]


def meter_reading(spec: MeterSpec, judge_dir: str | None, reader_dir: str | None, device: str):
    """How a meter reads its images: `read(images, request)` for the spec's reading and reader."""
    if spec.reading == "attribute_shares":
        if spec.by == "reader":
            return attribute_shares_of(reader_classifier)
        if judge_dir is None:
            raise ConfigError("judge: a debias edit needs a CLIP judge to measure attribute ratios")
        return attribute_shares_of(judge_classifier(ClipJudge.load(judge_dir, device=device)))
    if spec.by == "reader":
        if reader_dir is None:
            raise ConfigError(f"{spec.stream}: meter 'reader' needs the toy world's attribute reader")
        return target_share_of(reader_shows_target(AttributeReader.load(Path(reader_dir))))
    if judge_dir is None:
        raise ConfigError(f"judge: the {spec.stream} needs a CLIP judge to measure the edit")
    return target_share_of(judge_shows_target(ClipJudge.load(judge_dir, device=device)))


def case_meters(specs, case: EditCase, family, sampling: SamplingConfig, seed: int, judge_dir: str | None,
                reader_dir: str | None, device: str) -> dict:
    """The meters an editor asked for (EditorMethod.meters) that serve a mode of the case's
    requests, by reading; each draws its images from its own seed stream."""
    modes = {r.mode for r in case.requests}
    return {spec.reading: source_meter(family, sampling, spec.n_images, stream_seed(seed, spec.stream),
                                       meter_reading(spec, judge_dir, reader_dir, device))
            for spec in specs if modes & set(spec.modes)}


def run_layer_stats(model_dir: Path, family_name: str, editor_name: str, block: dict, seed: int, device: str,
                    out: Path) -> None:
    """The layer statistics editor `editor_name` declares (EditorMethod.statistics) for one model."""
    statistics = EDITORS[editor_name].statistics
    if statistics is None:
        raise ConfigError(f"editors.{editor_name}: this editor reads no layer statistics")
    family = get_family(family_name)
    pipe = family.load(model_dir, device=device)
    with atomic_dir(out) as tmp:
        statistics.compute(pipe, family, block, seed, tmp)


def case_editor(editor_name: str, editor_cfg: dict, family, case: EditCase, judge_dir: str | None,
                sampling: SamplingConfig, seed: int, device: str, stats_dir: Path | None,
                reader_dir: str | None = None) -> Editor:
    """The editor of one case, with the meters it declares for the case's modes."""
    if editor_name not in EDITORS:
        raise ConfigError(f"editors: unknown editor {editor_name!r}; expected one of {sorted(EDITORS)}")
    meters = case_meters(EDITORS[editor_name].meters(editor_cfg), case, family, sampling, seed, judge_dir,
                         reader_dir, device)
    ctx = EditContext(family, case.task, seed, sampling, stats_dir, meters)
    return EDITORS[editor_name].build(editor_cfg, ctx)


def edit_and_save(pipe, family, editor: Editor, case: EditCase, model_dir: Path, out: Path) -> EditDelta:
    delta = editor.edit(pipe, family, list(case.requests))
    delta.sidecar.update(task=case.task, edit=case.name, model_dir=str(model_dir), family=family.name)
    delta.save(out)
    log.info("%s %s/%s: %d tensors in %.2f s", editor.name, case.task, case.name, len(delta.tensors),
             delta.sidecar["wall_s"])
    return delta


def run_edit(model_dir: Path, family_name: str, editor_name: str, editor_cfg: dict, case: EditCase,
             judge_dir: str | None, sampling: SamplingConfig, seed: int, device: str, out: Path,
             stats_dir: Path | None = None, layers: list[Path] = (), reader_dir: str | None = None) -> EditDelta:
    """Edit a model state (the base, or with `layers` a fine-tuned state: re-editing)."""
    family, pipe = load_model_state(model_dir, family_name, list(layers), device)
    editor = case_editor(editor_name, editor_cfg, family, case, judge_dir, sampling, seed, device, stats_dir,
                         reader_dir)
    return edit_and_save(pipe, family, editor, case, model_dir, out)


def run_reedits(edit_delta: Path, finetunes: Path, seeds: list[int], out: Path, model_dir: Path, family_name: str,
                editor_name: str, editor_cfg: dict, case: EditCase, judge_dir: str | None, sampling: SamplingConfig,
                seed: int, device: str, stats_dir: Path | None = None, reader_dir: str | None = None) -> None:
    """The same edit applied again to the fine-tuned state of every seed of a fine-tune, each
    delta in `out/seed<k>.safetensors` (the directory appears only when all are done). The
    edited model, the editor and its meter are made once; each seed's fine-tune is applied,
    edited and undone in turn (generation undoes member states the same way)."""
    family, pipe = load_model_state(model_dir, family_name, [edit_delta], device)
    loaded = save_weights(pipe, family)
    editor = case_editor(editor_name, editor_cfg, family, case, judge_dir, sampling, seed, device, stats_dir,
                         reader_dir)
    with atomic_dir(out) as tmp:
        for ft_seed in seeds:
            log.info("re-edit of fine-tune seed %d of %s", ft_seed, seeds)
            undo = apply_undoable(pipe, family, [finetunes / f"seed{ft_seed}"], loaded)
            edit_and_save(pipe, family, editor, case, model_dir, tmp / f"seed{ft_seed}.safetensors")
            undo()
