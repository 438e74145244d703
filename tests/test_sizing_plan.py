"""The sizing's arithmetic from footprints to a job's resources, the fit ladder and its refusal,
calibration, and the sizing table's agreement with Snakemake's own dry run."""

import math
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from editpersist.errors import ConfigError, InputError
from editpersist.sizing.calibrate import measured_utilisation
from editpersist.sizing.report import mismatches, parse_dry_run
from editpersist.sizing.resources import size_to_fit, size_work
from editpersist.sizing.settings import load_calibration, sizing_settings
from editpersist.sizing.work import GIB, Work

ROOT = Path(__file__).resolve().parents[1]
GB = GIB


def _settings(**changes):
    return sizing_settings({"sizing": {"gpu": {"name": "test", "peak_tflops": 100.0, "memory_gb": 40.0},
                                       "utilisation": {"default": 0.5, "finetune": 0.25, "generate": 0.5}, "runtime_safety": 2.0,
                                       "memory_safety": 1.25, "load_gb_per_s": 2.0, "image_io_s": 0.1,
                                       "job_overhead_s": 30.0, "cuda_context_gb": 1.0, "host_overhead_gb": 4.0,
                                       **changes}})


def _footprints(table):
    """Footprints of made-up workloads: {name: (bytes by category, FLOPs)}."""
    return lambda w: SimpleNamespace(peak_bytes=table[w][0], flops=table[w][1])


TABLE = {"small": ({"parameters": 8 * GB, "activations": 2 * GB}, 1e12),
         "large": ({"parameters": 8 * GB, "activations": 6 * GB, "temporaries": 1 * GB}, 4e12)}


def _work(rule="generate", calls=(("small", 100), ("large", 10)), **kw):
    return Work(rule, "m/job", "m", "sd14", "bf16", kw.pop("resident", 10 * GB), tuple(calls),
                load_bytes=kw.pop("load", 20e9), images_io=kw.pop("images", 50), **kw)


def test_a_jobs_figures_follow_the_stated_formulas():
    """Hand-computed: peak = resident 10 + the larger call's non-weight bytes (6 + 1) + kept 2 +
    context 1 = 20 GB; FLOPs 100 x 1 + 10 x 4 = 140 TFLOP at 100 TFLOP/s x 0.5 = 2.8 s; load
    20 GB / 2 GB/s = 10 s; I/O 50 x 0.1 = 5 s; overhead 30 s: 47.8 s, runtime x 2 -> 2 min."""
    sized = size_work(_work(keep_bytes=2 * GB), _settings(), _footprints(TABLE))
    assert sized.peak_gb == pytest.approx(20.0)
    assert sized.peak_by_category_gb == pytest.approx({"resident": 10.0, "parameters": 0.0, "gradients": 0.0,
                                                       "optimizer": 0.0, "activations": 6.0, "other": 4.0})
    assert sized.tflops == pytest.approx(140.0)
    assert sized.compute_s == pytest.approx(2.8)
    assert sized.hours == pytest.approx((30 + 10 + 2.8 + 5) / 3600)
    assert sized.runtime_min == math.ceil(47.8 * 2 / 60)
    assert sized.gpu_mem_gb == math.ceil(20 * 1.25)
    assert sized.host_mem_gb == math.ceil((20e9 / GB + 4) * 1.25)


def test_a_calibration_file_replaces_the_assumed_utilisation(tmp_path):
    """A pilot that measured finetune at 0.5 of peak (assumed 0.25) halves every fine-tune's
    compute time; other job kinds keep their assumption."""
    calls = (("large", 1000),)
    before = size_work(_work("finetune", calls), _settings(), _footprints(TABLE))
    path = tmp_path / "calibration.json"
    path.write_text('{"utilisation": {"finetune": 0.5}}')
    calibrated = _settings(calibration=str(path))
    after = size_work(_work("finetune", calls), calibrated, _footprints(TABLE))
    assert before.compute_s == pytest.approx(4000 / (100 * 0.25))
    assert after.compute_s == pytest.approx(before.compute_s / 2)
    assert after.runtime_min < before.runtime_min
    other = size_work(_work("generate", calls), calibrated, _footprints(TABLE))
    assert other.compute_s == pytest.approx(4000 / (100 * 0.5))


@pytest.mark.parametrize("text, message", [
    ('{"utilisation": {"finetune": 1.5}}', "utilisation' map"),
    ('{"utilisation": {"trainn": 0.5}}', "unknown job kinds \\['trainn'\\]"),
])
def test_a_bad_calibration_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^sizing.calibration: .*{message}"):
        load_calibration(path)
    with pytest.raises(ConfigError, match="not found"):
        load_calibration(tmp_path / "missing.json")


def test_a_job_that_does_not_fit_takes_the_first_knobs_that_fit_or_is_refused():
    """Knob by knob: as configured 10 + 60 + 1 GB; checkpointing leaves 10 + 20 + 1 (x 1.25 = 38.75,
    fits 40 GB). A job that fits with no knob gets none; one that fits with none is refused
    with its name and both figures."""
    table = {"bare": ({"activations": 60 * GB}, 1e12), "ckpt": ({"activations": 20 * GB}, 1.3e12),
             "off": ({"activations": 19 * GB}, 1.3e12), "huge": ({"activations": 90 * GB}, 1e12)}

    def build(steps):
        def work(knobs):
            name = steps["offload_frozen" in knobs and 2 or "gradient_checkpointing" in knobs and 1 or 0]
            return replace(_work("finetune", ((name, 1),)), knobs=knobs)
        return work

    fitted = size_to_fit(build(("bare", "ckpt", "off")), _settings(), _footprints(table))
    assert fitted.knobs == ("gradient_checkpointing",)
    assert size_to_fit(build(("ckpt", "ckpt", "ckpt")), _settings(), _footprints(table)).knobs == ()
    with pytest.raises(ConfigError) as err:
        size_to_fit(build(("huge", "huge", "huge")), _settings(), _footprints(table))
    line = str(err.value)
    assert "\n" not in line
    assert re.match(r"finetune m/job: sized peak 101\.0 GB x 1\.25 exceeds the GPU's 40 GB \(sizing\.gpu\.memory_gb\) "
                    r"with gradient_checkpointing and offload_frozen; as configured 101\.0 GB", line)


def test_the_dry_run_parser_reads_rules_wildcards_and_resources():
    text = """
rule edit:
    input: x
    output: results/states/sd14/edit/uce/role/r-1.safetensors
    jobid: 3
    wildcards: model=sd14, editor=uce, task=role, edit=r-1
    resources: tmpdir=/tmp, mem_mb=9216, runtime=12, gpu=1, gpu_mem_mb=20480

localrule all:
    input: a
    jobid: 0
    resources: tmpdir=/tmp, runtime=60
"""
    jobs = parse_dry_run(text)
    assert [j["rule"] for j in jobs] == ["edit", "all"]
    assert list(jobs[0]["wildcards"].values()) == ["sd14", "uce", "role", "r-1"]
    assert jobs[0]["resources"]["gpu_mem_mb"] == "20480" and jobs[1]["wildcards"] == {}
    short = {"rule": "edit", "job": "sd14/uce/role/r-1", "gpu": 1, "runtime_min": 13, "mem_gb_requested": 20,
             "planned_runtime_min": 12, "planned_gpu_mem_mb": 20480}
    assert mismatches([short]) == ["edit sd14/uce/role/r-1"]
    assert mismatches([{**short, "runtime_min": 12}]) == []


def test_measured_utilisation_is_flops_over_busy_seconds():
    """Two fine-tunes: 1,000 and 3,000 TFLOP in 30 + 10 and 70 + 10 s, 10 s of which are fixed
    (overhead 5, load 3, I/O 2): 4,000 / (100 x (30 + 70)) = 0.4. A job whose fixed seconds pass
    its measured ones is skipped; class_images takes generation's figure."""
    rows = [{"rule": "finetune", "job": "a", "gpu": 1, "tflops": 1000, "load_s": 3, "io_s": 2},
            {"rule": "finetune", "job": "b", "gpu": 1, "tflops": 3000, "load_s": 3, "io_s": 2},
            {"rule": "generate", "job": "c", "gpu": 1, "tflops": 500, "load_s": 3, "io_s": 2},
            {"rule": "edit", "job": "d", "gpu": 1, "tflops": 1, "load_s": 30, "io_s": 0}]
    seconds = {("finetune", "a"): 40.0, ("finetune", "b"): 80.0, ("generate", "c"): 20.0, ("edit", "d"): 20.0}
    out = measured_utilisation(rows, seconds, peak_tflops=100.0, overhead_s=5.0)
    assert out["finetune"]["utilisation"] == pytest.approx(0.4)
    assert out["generate"]["utilisation"] == pytest.approx(500 / (100 * 10))
    assert out["class_images"]["utilisation"] == out["generate"]["utilisation"]
    assert "edit" not in out


def test_a_missing_benchmark_folder_is_one_line(tmp_path):
    from editpersist.sizing.calibrate import benchmark_seconds

    bad = tmp_path / "x.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="not a Snakemake benchmark file"):
        benchmark_seconds(bad)


def test_the_paper_config_names_every_sizing_assumption():
    """config/paper.yaml states the GPU and the utilisations it plans with (nothing hidden in defaults)."""
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    assert set(cfg["sizing"]["utilisation"]) == set(sizing_settings({}).utilisation)
    assert cfg["sizing"]["gpu"]["memory_gb"] == 80.0
