"""The benchmark command's pieces compute what they claim (timings themselves are not asserted)."""

import torch

from editpersist.bench.runs import stage_times, stages_table, uce_per_layer
from editpersist.editors.closed_form import apply_transform, shared_transform


def test_per_layer_uce_baseline_matches_the_batched_solve():
    g = torch.Generator().manual_seed(0)
    weights = {f"w{i}": torch.randn(8 + 4 * (i % 2), 6, generator=g) for i in range(4)}
    C_e, D_e, C_p = (torch.randn(n, 6, generator=g) for n in (3, 3, 5))
    batched = apply_transform(weights, shared_transform(C_e, D_e, C_p, 0.5, 1.0, 1.0))
    loop = uce_per_layer(weights, C_e, D_e, C_p, 0.5, 1.0, 1.0)
    for k in weights:
        torch.testing.assert_close(batched[k], loop[k], atol=1e-5, rtol=1e-5)


def test_stage_times_sum_benchmark_files_per_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\n"
    for rel, sec in (("generate/a/b.tsv", 10.0), ("generate/c.tsv", 5.5), ("toy/vae_sd.tsv", 100.0)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(header + f"{sec}\t0:00:10\t1.0\n")
    stages = stage_times(tmp_path)
    assert stages["generate"] == {"jobs": 2, "seconds": 15.5} and stages["toy"]["jobs"] == 1
    assert "| **all but the toy build** | | 16 |" in stages_table(stages, cores=2)
