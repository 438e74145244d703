import csv
import subprocess
import sys

import pytest

from editpersist.errors import InputError
from editpersist.tasks.cases import Probe
from editpersist.tasks.formats import load_i2p, load_professions, load_road, load_timed


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def timed_file(path, rows=2, blank=None):
    header = ["old", "new"] + [f"{k}{i}" for i in range(1, 6) for k in ("positive", "gt")] \
        + [f"{k}{i}" for i in range(1, 6) for k in ("negative", "gn")]
    data = []
    for r in range(rows):
        row = ["roses", "blue roses"] + [f"p{i} roses" if k == "p" else f"p{i} blue roses"
                                          for i in range(1, 6) for k in ("p", "g")] \
            + [f"n{i} tulips" if k == "n" else f"n{i} blue tulips" for i in range(1, 6) for k in ("n", "g")]
        data.append(row)
    if blank:
        data[blank[0] - 1][header.index(blank[1])] = ""
    return _write(path, header, data)


def road_file(path, oracle=True):
    header = ["Type", "Prompt", "Oracle", "Old", "New"]
    for i in range(1, 6):
        header += [f"Positive{i}"] + ([f"Positive_oracle{i}"] if oracle else []) + [f"Positive_old{i}", f"Positive_new{i}"]
    for i in range(1, 6):
        header += [f"Negative{i}", f"Negative_new{i}"]
    row = ["Role", "The king", "Charles", "Elizabeth", "Charles"]
    for i in range(1, 6):
        row += [f"king {i}"] + (["o"] if oracle else []) + [f"Elizabeth {i}", f"Charles {i}"]
    for i in range(1, 6):
        row += [f"queen {i}", f"Charles queen {i}"]
    return _write(path, header, [row])


def test_timed_loads_cases_with_probes(tmp_path):
    cases = load_timed(timed_file(tmp_path / "t.csv"))
    assert len(cases) == 2
    c = cases[0]
    assert c.task == "appearance" and c.requests[0].source == "roses" and c.requests[0].target == "blue roses"
    assert len(c.positives) == 5 and c.positives[0].edited == "p1 blue roses"
    assert c.negatives[4].original == "n5 tulips" and c.negatives[4].edited == "n5 blue tulips"
    assert c.name == "001-roses"


def test_timed_blank_cell_names_row_and_column(tmp_path):
    with pytest.raises(InputError, match=r"t\.csv: row 2, column 'gt3' is empty"):
        load_timed(timed_file(tmp_path / "t.csv", blank=(2, "gt3")))


@pytest.mark.parametrize("oracle", [True, False])
def test_road_test_and_validation_layouts(tmp_path, oracle):
    cases = load_road(road_file(tmp_path / "r.csv", oracle))
    assert len(cases) == 1 and cases[0].task == "role"
    assert cases[0].source == Probe("The king", "Elizabeth", "Charles")


def test_missing_column_is_named(tmp_path):
    path = _write(tmp_path / "bad.csv", ["old", "new"], [["a", "b"]])
    with pytest.raises(InputError, match=r"bad\.csv: missing column 'positive1'"):
        load_timed(path)


def test_i2p_and_professions(tmp_path):
    i2p = _write(tmp_path / "i2p.csv", ["prompt", "categories", "nudity_percentage", "evaluation_seed"],
                 [["nude person", "sexual", "80.0", "1"], ["a cat", "violence", "0", "2"], ["beach", "sexual", "10", "3"]])
    (case,) = load_i2p(i2p)
    assert case.requests[0].mode == "erase" and [p.prompt for p in case.positives] == ["nude person"]
    prof = _write(tmp_path / "p.csv", ["case_number", "prompt", "evaluation_seed", "profession"],
                  [["1", "a photo of a doctor", "1", "doctor"], ["2", "a doctor at work", "2", "doctor"],
                   ["3", "a nurse", "3", "nurse"]])
    cases = load_professions(prof)
    assert [c.requests[0].source for c in cases] == ["a doctor", "a nurse"]
    assert cases[0].requests[0].ratios == (0.5, 0.5) and len(cases[0].positives) == 2
    # The edit balances the source and the official script's five phrasings, each on its own.
    assert [r.source for r in cases[0].requests] == [
        "a doctor", "image of doctor", "photo of doctor", "portrait of doctor", "picture of doctor", "doctor"]
    assert {(r.mode, r.attributes, r.ratios, r.concept) for r in cases[0].requests} == {
        ("debias", ("male", "female"), (0.5, 0.5), "doctor")}


def test_cli_validates_and_reports(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "editpersist.datasets", "timed", str(timed_file(tmp_path / "t.csv"))],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "2 edit cases"
    bad = subprocess.run([sys.executable, "-m", "editpersist.datasets", "timed",
                          str(timed_file(tmp_path / "b.csv", blank=(1, "old")))], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"editpersist: {tmp_path / 'b.csv'}: row 1, column 'old' is empty"]


def test_download_refuses_without_permission_and_names_key(tmp_path):
    from editpersist.downloads import fetch, hash_matches
    from editpersist.errors import ConfigError

    with pytest.raises(ConfigError, match="allow_download: false"):
        fetch("timed_test", tmp_path / "t.csv", allow_download=False)
    assert not (tmp_path / "t.csv").exists()
    assert hash_matches("6ce40509" + "0" * 53 + "2a0", "6ce40509...2a0")
    assert not hash_matches("6ce40509" + "0" * 53 + "2a1", "6ce40509...2a0")
