"""Coverage of the retention interval: `python -m editpersist.bench coverage`.

Draws whole studies of one cell from a known process and asks how often the 95 % interval the
evaluation states (evaluation.persistence: `grid_estimate` for every state, `retention_by_seed`
for the cell, the same functions the study runs) contains the true retention, and how wide it
is, for 2, 3 and 5 fine-tune seeds at the toy study's and the paper's image counts.

The process (`Process`): every prompt has its own base and edited hit rate (logit-normal around
`base_rate` and `edited_rate`, spread `prompt_sd`); each fine-tune seed s has its own retention
r_s (a Beta draw with mean `retention` and sd `seed_sd`) and raises the base's rate by a share
u_s ~ U(0, `drift`) of the headroom the edited rate leaves; then on every prompt

    base_ft = base + u_s (1 - edited),   edited_ft = base_ft + r_s (edited - base),

so every prompt's retention for seed s is r_s and the truth is `retention`. Images are
Bernoulli; a share `coupling` of them reuse one uniform per (prompt, image) across every state
and seed, as the study's shared noise seeds make images of different states alike. Retention is
scored only where the study would state it (the edit's effect established: its interval
excludes 0 and reaches `min_effect`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..evaluation.persistence import effect_problem, grid_estimate, retention_by_seed
from ..metrics.bootstrap import percentile_interval
from ..metrics.task_metrics import METRICS

SEEDS = (2, 3, 5)
# (prompts, images per prompt) of the primary metric (efficacy: the source prompt) and of
# generality, as config/config.yaml (toy) and config/paper.yaml generate them.
COUNTS = {"toy": {"efficacy": (1, 32), "generality": (4, 10)},
          "paper": {"efficacy": (1, 25), "generality": (5, 25)}}


@dataclass(frozen=True)
class Process:
    retention: float = 0.7
    seed_sd: float = 0.15
    prompt_sd: float = 0.5
    base_rate: float = 0.05
    edited_rate: float = 0.95
    drift: float = 0.3
    coupling: float = 0.5
    min_effect: float = 0.1

    def check(self) -> None:
        r, sd = self.retention, self.seed_sd
        if not 0 <= r <= 1 or sd < 0 or (sd > 0 and sd**2 >= r * (1 - r)):
            raise ConfigError(f"coverage: seed_sd {sd} is impossible for a retention {r} drawn on [0, 1] "
                              f"(needs seed_sd^2 < r (1 - r))")
        for name in ("base_rate", "edited_rate", "drift", "coupling"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"coverage: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.edited_rate <= self.base_rate:
            raise ConfigError("coverage: edited_rate must exceed base_rate (the edit raises its metric)")


# The default scenarios: a retention in the middle with a wide seed spread; a saturated edit that
# is nearly kept (every image of a seed often hits, so the seeds' retentions often agree); no
# seed spread at all (the images are all there is).
SCENARIOS = {
    "spread": Process(),
    "near_one": Process(retention=0.97, seed_sd=0.02, base_rate=0.01, edited_rate=0.99, drift=0.0),
    "no_seed_spread": Process(retention=0.5, seed_sd=0.0),
    # Seeds that disagree widely (a U-shaped spread of retentions) with independent images.
    "wide_spread": Process(retention=0.5, seed_sd=0.3, coupling=0.0),
}


def custom_process(settings: list[str]) -> dict[str, Process]:
    """`--process retention=0.9 --process seed_sd=0.05`: one scenario, the default's with those
    fields changed."""
    fields = {}
    for item in settings:
        name, _, value = item.partition("=")
        if name not in Process.__dataclass_fields__ or not value:
            raise ConfigError(f"coverage --process {item!r}: expected <field>=<number> with a field of "
                              f"{', '.join(Process.__dataclass_fields__)}")
        fields[name] = float(value)
    return {"custom": replace(Process(), **fields)}


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def prompt_rates(rate: float, sd: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-prompt rates, logit-normal around `rate` (a rate of exactly 0 or 1 has no spread)."""
    if rate in (0.0, 1.0) or sd == 0:
        return np.full(n, rate)
    return 1 / (1 + np.exp(-(_logit(rate) + sd * rng.normal(size=n))))


def seed_retentions(p: Process, n: int, rng: np.random.Generator) -> np.ndarray:
    if p.seed_sd == 0:
        return np.full(n, p.retention)
    k = p.retention * (1 - p.retention) / p.seed_sd**2 - 1
    return rng.beta(p.retention * k, (1 - p.retention) * k, size=n)


def draw_study(p: Process, n_seeds: int, n_prompts: int, n_images: int, rng: np.random.Generator) -> dict:
    """Hit grids of one cell: base and edited [P, N], base_ft and edited_ft [S, P, N]."""
    base = prompt_rates(p.base_rate, p.prompt_sd, n_prompts, rng)
    edited = np.maximum(prompt_rates(p.edited_rate, p.prompt_sd, n_prompts, rng), base)
    r = seed_retentions(p, n_seeds, rng)[:, None]
    u = rng.uniform(0, p.drift, size=(n_seeds, 1)) if p.drift > 0 else np.zeros((n_seeds, 1))
    base_ft = base + u * (1 - edited)
    edited_ft = base_ft + r * (edited - base)
    shared = rng.random((n_prompts, n_images))

    def images(rates: np.ndarray) -> np.ndarray:
        own = rng.random(rates.shape[:-1] + (n_prompts, n_images))
        noise = np.where(rng.random(own.shape) < p.coupling, shared, own)
        return (noise < rates[..., None]).astype(float)

    return {"base": images(base), "edited": images(edited), "base_ft": images(base_ft),
            "edited_ft": images(edited_ft)}


def study_interval(grids: dict, samples: int, seed: int, min_effect: float):
    """The interval the study would state for this cell (None where it states no retention)."""
    m = METRICS["efficacy"]

    def est(grid, name):
        return grid_estimate(grid, m, samples, seed, name)

    base, edited = est(grids["base"], "base"), est(grids["edited"], "edited")
    parts = [[est(g, f"{kind}/seed{s}") for s, g in enumerate(grids[kind])] for kind in ("base_ft", "edited_ft")]
    base_ft, edited_ft = (replace(ps[0], per_seed=np.concatenate([q.per_seed for q in ps]),
                                  replicates=np.concatenate([q.replicates for q in ps])) for ps in parts)
    low, high = percentile_interval(edited.replicates[0] - base.replicates[0])
    if effect_problem("efficacy", edited.value - base.value, low, high, min_effect):
        return None
    return retention_by_seed(base, edited, base_ft, edited_ft)[2]


def coverage_of(p: Process, n_seeds: int, n_prompts: int, n_images: int, studies: int, samples: int,
                seed: int) -> dict:
    rng = np.random.default_rng([seed, n_seeds, n_prompts, n_images])
    inside, widths, stated = [], [], 0
    for k in range(studies):
        iv = study_interval(draw_study(p, n_seeds, n_prompts, n_images, rng), samples, seed + k, p.min_effect)
        if iv is None:
            continue
        stated += 1
        inside.append(iv.low <= p.retention <= iv.high)
        widths.append(iv.high - iv.low)
    return {"coverage": round(float(np.mean(inside)), 4) if inside else None,
            "median_width": round(float(np.median(widths)), 4) if widths else None,
            "zero_width": int(np.sum(np.array(widths) == 0)), "stated": stated, "studies": studies}


def coverage_bench(scenarios: dict[str, Process] | None = None, seeds: tuple[int, ...] = SEEDS,
                   counts: dict | None = None, studies: int = 1000, samples: int = 1000, seed: int = 0) -> dict:
    """Coverage and median width per scenario, image counts, metric and number of seeds."""
    scenarios = scenarios or SCENARIOS
    counts = counts or COUNTS
    start = time.perf_counter()
    out = {"level": 0.95, "studies": studies, "samples": samples, "seed": seed,
           "processes": {name: asdict(p) for name, p in scenarios.items()}, "counts": counts, "results": {}}
    for name, p in scenarios.items():
        p.check()
        out["results"][name] = {
            where: {metric: {str(s): coverage_of(p, s, n_p, n_i, studies, samples, seed) for s in seeds}
                    for metric, (n_p, n_i) in by_metric.items()}
            for where, by_metric in counts.items()}
    cells = [c for sc in out["results"].values() for w in sc.values() for m in w.values() for c in m.values()]
    out["min_coverage"] = min(c["coverage"] for c in cells if c["coverage"] is not None)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    import sys
    from pathlib import Path

    from ..io import write_json

    p = argparse.ArgumentParser(prog="python -m editpersist.bench coverage", description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["coverage"])
    p.add_argument("--process", action="append", default=[],
                   help="field=value of the simulated process (repeatable); replaces the default scenarios by one")
    p.add_argument("--studies", type=int, default=1000, help="studies per setting")
    p.add_argument("--samples", type=int, default=1000, help="bootstrap replicates per study")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench/coverage.json", type=Path)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    res = coverage_bench(custom_process(a.process) if a.process else None, studies=a.studies, samples=a.samples,
                         seed=a.seed)
    write_json(a.out, res)
    print(json.dumps(res, indent=2))
