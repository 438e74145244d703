"""What the SLURM profile asks the cluster for, on the paper grid's jobs (a dry run plans them
without any of the grid's files)."""

from __future__ import annotations

import re

import yaml
from conftest import ROOT, run_snakemake

PAPER = yaml.safe_load((ROOT / "config/paper.yaml").read_text())


def planned_resources(workdir, *targets: str) -> dict[tuple[str, str], dict[str, str]]:
    """(rule, wildcards) -> resources, as `snakemake -n --profile profiles/slurm` prints them."""
    (workdir / "config").symlink_to(ROOT / "config")
    # Targets first: --configfile takes every word after it.
    res = run_snakemake(workdir, *targets, "-n", "--profile", str(ROOT / "profiles/slurm"), "--configfile",
                        str(ROOT / "config/paper.yaml"), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = re.findall(r"rule (\w+):\n(?:.*\n)*?\s+wildcards: (.*)\n(?:.*\n)*?\s+resources: (.*)\n", res.stdout)
    return {(rule, wc): dict(kv.split("=", 1) for kv in resources.split(", ")) for rule, wc, resources in jobs}


def test_paper_jobs_ask_one_h100_and_minutes_for_every_seed_they_cover(tmp_path):
    seeds = len(PAPER["finetuners"]["lora"]["seeds"])
    assert seeds == len(PAPER["finetuners"]["dreambooth"]["seeds"]) == 3
    jobs = planned_resources(tmp_path, "results/states/sdxl/base/ft/dreambooth/dog",
                             "results/images/sdxl/base/ft/lora/dog/all")
    finetune = jobs[("finetune", "model=sdxl, start=base, finetuner=dreambooth, subject=dog")]
    generate = jobs[("generate", "model=sdxl, group=base/ft/lora/dog, prompt_set=all")]
    class_images = jobs[("class_images", "model=sdxl, start=base, subject=dog")]
    # Per-seed minutes on one H100 (workflow/rules): fine-tune 240, generation 120; class images
    # are made once per start state, 60.
    assert finetune["runtime"] == str(240 * seeds) and generate["runtime"] == str(120 * seeds)
    assert class_images["runtime"] == "60"
    assert finetune["mem_mb"] == "96000" and generate["mem_mb"] == class_images["mem_mb"] == "64000"
    for job in (finetune, generate, class_images):
        assert job["gpu"] == "1" and job["gpu_model"] == "h100"
        assert job["disk_mb"] == "10000"
        assert job["slurm_account"] == "<your-account>"
