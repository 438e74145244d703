"""The real datasets' edit cases (TIMED, RoAD, professions, I2P) taken past loading: scored,
reduced to the table's metrics and turned into persistence rows, on the shipped excerpts of
the published files. Each crash the real path had is a test here."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_cell
from editpersist.tasks.requests import attribute_prompt
from editpersist.errors import InputError
from editpersist.evaluation.persistence import ModelScores, persistence_rows
from editpersist.evaluation.prompts import case_key, case_probes
from editpersist.evaluation.scoring import probe_hits
from editpersist.metrics.task_metrics import fit_references, metrics_of_case
from editpersist.tasks.formats import load_i2p, load_professions, load_road, load_timed

DATA = Path(__file__).parent / "data" / "datasets"
STATES = ("base", "edit/uce/t/e", "base/ft/lora/dog/seed0", "edit/uce/t/e/ft/lora/dog/seed0")


def test_debias_attributes_are_written_next_to_the_concept():
    assert attribute_prompt("female", "a doctor at work", "doctor") == "a female doctor at work"
    assert attribute_prompt("male", "attendant in the workplace", "attendant") == "male attendant in the workplace"
    assert attribute_prompt("male", "portrait of construction worker", "construction worker") == \
        "portrait of male construction worker"
    assert attribute_prompt("female", "image of Doctor", "Doctor") == "image of female Doctor"
    assert attribute_prompt("female", "image of Doctor", "") == "female"  # UCE's bare encoding
    with pytest.raises(InputError, match="does not name its concept"):
        attribute_prompt("female", "image of a nurse", "doctor")


def test_professions_loader_refuses_a_prompt_without_its_profession(tmp_path):
    bad = tmp_path / "professions.csv"
    bad.write_text("case_number,prompt,evaluation_seed,profession\n0,image of nurse,1,nurse\n1,a person,2,nurse\n")
    with pytest.raises(InputError, match=r"row 2, column 'prompt'.*'nurse'"):
        load_professions(bad)


class RecordingJudge:
    """Stands in for ClipJudge: records the texts it is asked to choose among."""

    def __init__(self, choice: int):
        self.choice, self.texts = choice, []

    def choose(self, features, texts):
        self.texts.append(list(texts))
        return np.full(len(features), self.choice)


def test_professions_case_is_scored_with_attributes_next_to_the_profession():
    case = load_professions(DATA / "professions_excerpt.csv")[0]
    assert case.name == "001-attendant" and case.source.prompt == "an attendant"
    assert len(case.positives) == 10 and not case.negatives
    judge = RecordingJudge(choice=1)
    hits = probe_hits(case, "positive", case.positives[8], None, np.zeros((3, 4)), judge)
    assert judge.texts == [["male attendant in the workplace", "female attendant in the workplace"]]
    assert hits["judge_attr"].tolist() == [1, 1, 1]


def score_rows(case, values_by_state: dict[str, dict[str, list]], column: str) -> pd.DataFrame:
    """A scored table as the score rule writes it: per state, per probe of the case, images
    with `column` set from values_by_state[state][role] (cycled over images), plus quality rows."""
    rows = []
    for state, by_role in values_by_state.items():
        for role, probe in case_probes(case):
            values = by_role[role]
            for i in range(len(values)):
                rows.append({"state": state, "step": -1, "case": case_key(case), "role": role, "prompt": probe.prompt,
                             "index": i, "judge_hit": np.nan, "judge_attr": -1, "reader_hit": np.nan,
                             "reader_attr": -1, "clip_score": np.nan, "feature": -1, column: values[i]})
        for i in range(4):
            rows.append({"state": state, "step": -1, "case": "", "role": "quality", "prompt": "a caption",
                         "index": i, "judge_hit": np.nan, "judge_attr": -1, "reader_hit": np.nan, "reader_attr": -1,
                         "clip_score": 20.0 + i, "feature": STATES.index(state) * 4 + i})
    return pd.DataFrame(rows)


def model_scores(table: pd.DataFrame) -> ModelScores:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(16, 3))
    return ModelScores(table, features, fit_references(rng.normal(size=(32, 3))), "judge", 200, 0)


def test_professions_debias_rows_are_the_gap_to_the_desired_ratio():
    case = load_professions(DATA / "professions_excerpt.csv")[1]  # cashier
    # Attribute index per image (0 male, 1 female, -1 neither); base all male, edited balanced
    # (16 images per prompt, so the bootstrap establishes the edit's effect).
    attrs = {"base": [0, 0, 0, 0], "edit/uce/t/e": [0, 1, 0, 1], "base/ft/lora/dog/seed0": [0, 0, 0, 1],
             "edit/uce/t/e/ft/lora/dog/seed0": [0, 1, -1, 1]}
    table = score_rows(case, {s: {"source": a * 4, "positive": a * 4} for s, a in attrs.items()}, "judge_attr")
    rows = {r["metric"]: r for r in persistence_rows(model_scores(_rename(table, case)), _cell(case))}
    assert list(rows) == ["debias_score", "clip_score", "fd_judge", "kd_judge"]
    # Mean over attributes of |share - 0.5| among the images that show one: all male -> 0.5;
    # balanced -> 0; 1 of 4 female -> 0.25; [male, female, neither, female] -> 1/3 vs 2/3 -> 1/6.
    r = rows["debias_score"]
    assert (r["base"], r["edited"], r["base_ft"], r["edited_ft"]) == pytest.approx((0.5, 0.0, 0.25, 1 / 6))
    assert r["effect"] == pytest.approx(-0.5) and r["effect_ci_high"] < 0
    assert r["retention"] == pytest.approx((1 / 6 - 0.25) / (0.0 - 0.5))


def _cell(case):
    return make_cell("m", "sd", "uce", case, "lora", "dog", "unrelated")


def _rename(table: pd.DataFrame, case) -> pd.DataFrame:
    """The synthetic states carry the cell's real state names."""
    cell = _cell(case)
    names = dict(zip(STATES, ("base", cell.edited, cell.grid.base_fts[0], cell.grid.edited_fts[0])))
    return table.assign(state=table["state"].map(names))


def test_i2p_case_has_no_specificity_and_gets_persistence_rows():
    case = load_i2p(DATA / "i2p_excerpt.csv", category=None, min_nudity_percentage=0, max_prompts=3)[0]
    assert len(case.positives) == 3 and not case.negatives
    assert case.positives[0].prompt.endswith("william - adolphe bouguereau")  # whitespace normalised
    assert metrics_of_case(case, "judge") == ("unsafe_rate", "clip_score", "fd_judge", "kd_judge")
    unsafe = {"base": [1, 1, 1, 0], "edit/uce/t/e": [0, 0, 0, 0], "base/ft/lora/dog/seed0": [1, 1, 0, 0],
              "edit/uce/t/e/ft/lora/dog/seed0": [1, 0, 0, 0]}
    table = score_rows(case, {s: {"source": v * 4, "positive": v * 4} for s, v in unsafe.items()}, "judge_hit")
    rows = {r["metric"]: r for r in persistence_rows(model_scores(_rename(table, case)), _cell(case))}
    assert list(rows) == ["unsafe_rate", "clip_score", "fd_judge", "kd_judge"]
    r = rows["unsafe_rate"]
    assert (r["base"], r["edited"], r["base_ft"], r["edited_ft"]) == pytest.approx((0.75, 0.0, 0.5, 0.25))
    assert r["retention"] == pytest.approx((0.25 - 0.5) / (0.0 - 0.75))


def test_i2p_published_filter_and_its_refusal_name_the_file():
    with pytest.raises(InputError, match="i2p_excerpt.csv: no prompt of category 'sexual'"):
        load_i2p(DATA / "i2p_excerpt.csv")
    violent = load_i2p(DATA / "i2p_excerpt.csv", category="violence", min_nudity_percentage=0)[0]
    assert len(violent.positives) == 1  # only row 0 is of category violence


def test_timed_and_road_excerpts_define_every_replace_metric():
    timed = load_timed(DATA / "timed_test_excerpt.csv")
    road = load_road(DATA / "road_test_excerpt.csv")
    assert [c.task for c in road] == ["role", "role", "appearance", "appearance"]
    assert timed[0].requests[0].source == "A banana" and timed[0].requests[0].target == "A blue banana"
    for case in timed + road:
        assert len(case.positives) == 5 and len(case.negatives) == 5
        assert metrics_of_case(case, "judge") == ("efficacy", "generality", "specificity", "clip_score", "fd_judge",
                                                  "kd_judge")


def test_a_limit_reads_only_the_rows_it_takes(tmp_path):
    """A study of the first edits of a complete file does not fail on a bad row far below them."""
    from editpersist.errors import ConfigError
    from editpersist.tasks import load_cases

    lines = (DATA / "road_test_excerpt.csv").read_text().splitlines()
    bad = lines[1].split(",")
    bad[5] = ""  # Positive1 empty
    path = tmp_path / "road.csv"
    path.write_text("\n".join(lines + [",".join(bad)]) + "\n")
    cases = load_cases({"role": {"dataset": "road", "path": str(path), "limit": 2},
                        "appearance": {"dataset": "road", "path": str(path), "limit": 2}})
    assert [c.name for c in cases["role"]] == ["001-canada-s-prime-minister", "002-israel-s-prime-minister"]
    assert [c.name for c in cases["appearance"]] == ["003-louis-vuitton-bag", "004-ugg-boots"]
    with pytest.raises(ConfigError, match=r"tasks\.role\.path: .*row 5, column 'Positive1' is empty"):
        load_cases({"role": {"dataset": "road", "path": str(path), "limit": 3}})


def test_rule_params_carry_a_case_as_plain_data_that_shows_every_field():
    """The workflow's rule params hold case_record(case): Snakemake's params trigger compares
    their repr, so a changed preserve weight (a field the dataclass default leaves empty) must
    change it, and the script reads back the very case."""
    from dataclasses import replace

    from editpersist.tasks.cases import case_from_record, case_record, cases_from_record, cases_record
    from editpersist.tasks.toy import toy_cases
    from editpersist.toy.world import WorldSpec

    cases = toy_cases(WorldSpec())
    case = cases["appearance"][0]
    r = case.requests[0]
    weighted = replace(case, requests=(replace(r, preserve_weights=(2.0,) * len(r.preserve)), *case.requests[1:]))
    assert repr(case_record(weighted)) != repr(case_record(case))
    assert case_from_record(case_record(weighted)) == weighted
    assert cases_from_record(cases_record(cases)) == cases
    plain = (dict, tuple, list, str, int, float, bool, type(None))

    def only_plain(value):
        inner = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        return isinstance(value, plain) and all(only_plain(v) for v in inner)

    assert only_plain(cases_record(cases))
