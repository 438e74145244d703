"""Generated images never share seeds across uses: the evaluation's, the UCE debias meter's and
DreamBooth's class images (prior preservation must not train on the very images specificity is
then measured on, nor the debias loop be tuned on the evaluation's noise)."""

from pathlib import Path

import yaml

from editpersist.evaluation.prompts import QualityConfig, case_probes, quality_captions
from editpersist.finetuners.subjects import make_subject
from editpersist.sampling import image_seed, stream_seed
from editpersist.tasks import load_cases

ROOT = Path(__file__).resolve().parents[1]


def seeds_of_a_study(config: dict, planning: bool = False) -> dict[str, set[int]]:
    seed, ev = config["seed"], config["evaluation"]
    cases = load_cases(config["tasks"], planning=planning)
    subjects = [make_subject({("cls" if k == "class" else k): v for k, v in s.items()})
                for s in config["finetune_data"]["subjects"]]
    prompts = {p.prompt for cs in cases.values() for c in cs for _, p in case_probes(c)}
    prompts |= set(quality_captions(QualityConfig(**ev["quality"]))) if ev["quality"]["captions"] == "toy" else set()
    prompts |= {s.instance_prompt for s in subjects}
    n = max(ev["images_per_prompt"], ev["images_per_source"])
    evaluation = {image_seed(stream_seed(seed, "evaluation"), p, i) for p in prompts for i in range(n)}
    n_class = config["finetune_data"]["n_class_images"]
    class_images = {image_seed(stream_seed(seed, "class_images"), s.class_prompt, i) for s in subjects
                    for i in range(n_class)}
    n_meter = config["editors"].get("uce", {}).get("debias", {}).get("n_images", 32)
    meter = {image_seed(stream_seed(seed, "debias_meter"), r.source, i) for c in cases.get("debias", [])
             for r in c.requests for i in range(n_meter)}
    return {"evaluation": evaluation, "class_images": class_images, "debias_meter": meter}


def test_the_toy_studys_seed_streams_are_disjoint():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    streams = seeds_of_a_study(config)
    # The class prompt of the toy subject ("a square") is itself an evaluation prompt.
    assert "a square" in {p.prompt for c in load_cases(config["tasks"])["appearance"] for _, p in case_probes(c)}
    assert streams["class_images"] and streams["debias_meter"]
    assert not streams["evaluation"] & streams["class_images"]
    assert not streams["evaluation"] & streams["debias_meter"]
    assert not streams["class_images"] & streams["debias_meter"]


def test_the_paper_grids_class_images_and_evaluation_seeds_are_disjoint():
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    streams = seeds_of_a_study(config, planning=True)
    assert len(streams["class_images"]) == 3 * config["finetune_data"]["n_class_images"]
    assert not streams["evaluation"] & streams["class_images"]
