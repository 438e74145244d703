"""results/toy/quality.json and the fidelity grids."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..families import get_family
from ..images import grid, save_png
from ..io import write_json
from ..judges.clip import ClipJudge
from ..sampling import SamplingConfig
from ..tasks.toy import toy_cases
from ..toy.reader import AttributeReader
from ..toy.world import WorldSpec
from .toy_quality import judge_two_way_accuracy, prompt_fidelity, reader_accuracy, subject_binding

log = logging.getLogger("editpersist")


def write_quality(models: list[dict], model_dirs: list[Path], reader_dir: Path, judge_dir: Path,
                  stats_files: list[Path], n_per_pair: int, n_fresh: int, sampling: dict, seed: int,
                  out: Path, grids: list[Path]) -> None:
    spec = WorldSpec()
    reader = AttributeReader.load(reader_dir)
    judge = ClipJudge.load(str(judge_dir))
    result = {
        "reader_accuracy": reader_accuracy(reader, n_fresh, seed),
        "judge_two_way_accuracy": judge_two_way_accuracy(judge, n_fresh, seed),
        "models": {},
    }
    log.info("reader %.4f judge %.4f", result["reader_accuracy"], result["judge_two_way_accuracy"])
    cfg = SamplingConfig(steps=sampling["steps"], guidance=sampling["guidance"])
    cases = toy_cases(spec)
    replace_cases = cases["appearance"] + cases["role"]
    for m, path, grid_path in zip(models, model_dirs, grids):
        family = get_family(m["family"])
        pipe = family.load(path, device="cpu")
        figures, images = prompt_fidelity(pipe, family, reader, spec, n_per_pair, cfg, seed)
        result["models"][m["name"]] = {"family": m["family"], **figures}
        log.info("%s fidelity %.4f (colour %.4f, shape %.4f)", m["name"], figures["prompt_fidelity"],
                 figures["color_acc"], figures["shape_acc"])
        save_png(grid_path, grid(images, len(spec.all_pairs()), n_per_pair), scale=3)
        # Whether ReFACT-style edits (confined to the subject's last token) can take on this model.
        binding = subject_binding(pipe, family, reader, replace_cases, 4 * n_per_pair, cfg, seed)
        result["models"][m["name"]]["subject_binding"] = binding
        for name, row in binding.items():
            log.info("%s %s subject transplant: %s (unedited %.2f, destination prompt %.2f)", m["name"], name,
                     row["transplant_after_layer"], row["unedited"], row["destination_prompt"])
    stats = [json.loads(p.read_text()) for p in stats_files]
    result["build_wall_s"] = {s["name"]: s["wall_s"] for s in stats}
    result["build_wall_s_total"] = round(sum(s["wall_s"] for s in stats), 1)
    result["sampling"] = sampling
    result["n_eval_per_pair"] = n_per_pair
    result["held_out_pairs"] = [list(p) for p in spec.held_out_pairs]
    write_json(out, result)
