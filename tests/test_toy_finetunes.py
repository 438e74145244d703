"""The toy fine-tune settings' search (bench/toy_finetunes.py): its candidates, its bar and its
choice, on hand-made runs; and that it keeps away from the study's subject and seeds."""

import yaml
from pathlib import Path

from editpersist.bench.toy_finetunes import (TUNING_SEEDS, TUNING_SUBJECTS, FitRun, candidates, choose,
                                             edit_targets, search_start)
from editpersist.tasks import load_cases

ROOT = Path(__file__).resolve().parents[1]
TOY = yaml.safe_load((ROOT / "config/config.yaml").read_text())


def run(steps, lr, fidelity, reach, subject="a", seed=100):
    return FitRun("toy-flux", "lora", steps, lr, subject, seed, fidelity, {"a blue circle": reach, "a triangle": 1.0},
                  1.0)


def test_candidates_are_the_configured_multiples_cheapest_first():
    got = candidates({"steps": 200, "lr": 2e-3, "rank": 4}, (1.0, 2.0), (0.5, 1.0))
    assert [(c["steps"], c["lr"]) for c in got] == [(200, 1e-3), (200, 2e-3), (400, 1e-3), (400, 2e-3)]
    assert all(c["rank"] == 4 for c in got)


def test_the_cheapest_candidate_whose_worst_run_clears_both_bars_by_the_margin_is_chosen():
    runs = [
        # 200 steps: one run's target reach is 0.85, under 0.8 + margin 0.1.
        run(200, 1e-3, 1.0, 1.0), run(200, 1e-3, 1.0, 0.85, subject="b", seed=101),
        # 400 steps at 2e-3: fidelity 0.9 exactly reaches the bar.
        run(400, 2e-3, 0.9, 0.95), run(400, 2e-3, 1.0, 1.0, subject="b", seed=101),
        # 400 steps at 1e-3: fidelity short on one run.
        run(400, 1e-3, 0.88, 1.0), run(400, 1e-3, 1.0, 1.0, subject="b", seed=101),
        run(800, 1e-3, 1.0, 1.0), run(800, 1e-3, 1.0, 1.0, subject="b", seed=101),
    ]
    assert choose(runs, 0.8, 0.8, 0.1) == (400, 2e-3, True)
    # Without a margin the first candidate already qualifies.
    assert choose(runs, 0.8, 0.8, 0.0) == (200, 1e-3, True)
    # None clears 1.05: the best worst run is 800 steps' (1.0).
    assert choose(runs, 0.8, 0.8, 0.25) == (800, 1e-3, False)
    assert choose(runs[:6], 0.8, 0.8, 0.25) == (400, 2e-3, False)  # worst runs 0.85, 0.9, 0.88


def test_tuning_keeps_away_from_the_study_subject_and_seeds():
    study_seeds = {s for ft in TOY["finetuners"].values() for s in ft["seeds"]}
    study_seeds |= {s for m in TOY["models"] for ft in m.get("finetuners", {}).values() for s in ft.get("seeds", [])}
    assert not study_seeds & set(TUNING_SEEDS) and TOY["seed"] not in TUNING_SEEDS
    study = {(s["class"], s["color"]) for s in TOY["finetune_data"]["subjects"]}
    assert not study & {(s["class"], s["color"]) for s in TUNING_SUBJECTS}
    assert not {s["name"] for s in TOY["finetune_data"]["subjects"]} & {s["name"] for s in TUNING_SUBJECTS}


def test_the_search_starts_from_the_model_entry_or_with_shared_settings_from_the_block():
    """A model's own DoRA learning rate (2e-3) overrides the block's (4e-3); a search after a
    rebuild starts from the block's, keeping its steps and rank. A config of its own, so that a
    change of the study's settings does not change what this checks."""
    config = {"finetuners": {"dora": {"steps": 200, "lr": 4e-3, "rank": 4}},
              "models": [{"name": "toy-sd"}, {"name": "toy-flux", "finetuners": {"dora": {"lr": 2e-3}}}]}
    own, shared = (search_start(config, "toy-flux", "dora", s) for s in (False, True))
    assert (own["lr"], shared["lr"]) == (2e-3, 4e-3)
    assert own["steps"] == shared["steps"] == 200 and shared["rank"] == 4
    assert search_start(config, "toy-sd", "dora", False) == shared


def test_every_replace_edit_target_of_the_study_is_measured():
    assert edit_targets(load_cases(TOY["tasks"])) == ["a blue circle", "a triangle"]


class PromptOrderReader:
    """Stands in for the toy reader: reads the first `n_subject` images (generate_counts makes
    the subject prompt's first, prompt-major) as the subject, then alternately a blue circle and
    a red square, so each target prompt's share is known by hand."""

    def __init__(self, n_subject: int, subject: dict):
        self.n_subject, self.subject = n_subject, subject

    def read(self, images):
        out = [{"color": self.subject["color"], "shape": self.subject["class"]}] * self.n_subject
        return out + [{"color": "blue", "shape": "circle"} if i % 2 == 0 else {"color": "red", "shape": "square"}
                      for i in range(len(images) - self.n_subject)]


def test_a_fit_run_fine_tunes_and_reads_each_prompt_of_its_own(tiny_model_dirs):
    """Two DreamBooth steps on a tiny random SD; 4 images a prompt. By hand: the subject's 4 all
    show it; "a blue circle" gets images 0-3 after the subject's (blue circle, red square, ...),
    so 2 of 4; "a triangle" images 4-7, no triangle among them."""
    from editpersist.bench.toy_finetunes import fit_run

    model = {"name": "tiny", "family": "sd", "path": str(tiny_model_dirs["sd"])}
    config = {"sampling": {"steps": 2, "guidance": 3.0}, "finetune_data": {"n_images": 4, "n_class_images": 2}}
    settings = {"steps": 2, "lr": 1e-4, "batch": 2, "precision": "fp32", "prior_weight": 1.0}
    run = fit_run(model, "dreambooth", settings, TUNING_SUBJECTS[0], 100, ["a blue circle", "a triangle"], config,
                  PromptOrderReader(4, TUNING_SUBJECTS[0]), 4, "cpu")
    assert (run.steps, run.lr, run.seed, run.subject) == (2, 1e-4, 100, "tune-yellow-square")
    assert run.subject_fidelity == 1.0 and run.target_reach == {"a blue circle": 0.5, "a triangle": 0.0}
