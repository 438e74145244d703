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


def test_paper_jobs_ask_one_h100_and_their_sized_minutes_for_every_seed_they_cover(tmp_path):
    """A fine-tune job covers all its seeds: its runtime is its sizing's, whose compute is three
    times one seed's. A generation too long for the 24-hour limit runs as generate_chunk jobs on
    a GPU each, gathered by a generate job that asks for none."""
    from editpersist.sizing.plan import finetune_work
    from editpersist.sizing.resources import size_to_fit
    from editpersist.sizing.sizer import GridSizer

    seeds = PAPER["finetuners"]["dreambooth"]["seeds"]
    assert len(seeds) == 3
    jobs = planned_resources(tmp_path, "results/states/sdxl/base/ft/dreambooth/dog",
                             "results/images/sdxl/base/ft/lora/dog/all")
    finetune = jobs[("finetune", "model=sdxl, start=base, finetuner=dreambooth, subject=dog")]
    gather = jobs[("generate", "model=sdxl, group=base/ft/lora/dog, prompt_set=all")]
    chunks = [r for (rule, wc), r in jobs.items() if rule == "generate_chunk"]
    class_images = jobs[("class_images", "model=sdxl, start=base, subject=dog")]

    sizer = GridSizer(PAPER)
    cfg = {k: v for k, v in PAPER["finetuners"]["dreambooth"].items() if k != "seeds"}

    def sized(n_seeds):
        record = {"family": "sdxl", "seeds": seeds[:n_seeds], "cfg": cfg, "resolution": 1024}
        return size_to_fit(lambda knobs: finetune_work("x", "sdxl", "sdxl", record, "dreambooth", 5, 200, "auto", knobs),
                           sizer.settings, sizer.footprints)

    assert finetune["runtime"] == str(sized(3).runtime_min)
    assert sized(3).compute_s == sized(1).compute_s * 3
    assert finetune["gpu_mem_mb"] == str(1024 * sized(3).gpu_mem_gb)
    assert gather["gpu"] == "0" and len(chunks) >= 2
    assert all(0 < int(c["runtime"]) <= 24 * 60 for c in chunks)
    for job in (finetune, class_images, *chunks):
        assert job["gpu"] == "1" and job["gpu_model"] == "h100"
        assert 0 < int(job["gpu_mem_mb"]) <= 80 * 1024
    for job in (finetune, gather, class_images, *chunks):
        assert job["disk_mb"] == "10000"
        assert job["slurm_account"] == "<your-account>"
