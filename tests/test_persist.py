"""UCE's persistence-aware mode (editors/persist.py) and the stress study that tests it."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from editpersist.config import resolve_extends, validate_config
from editpersist.editors import EDITORS, editor_block
from editpersist.editors.base import EditContext
from editpersist.editors.closed_form import solve_general
from editpersist.editors.persist import PersistConfig, PersistentUCE, draw_words, shielded, token_tokenizers
from editpersist.editors.text_inputs import encode_for_edit, key_rows, paired_rows
from editpersist.editors.uce import UCE, UCEConfig
from editpersist.errors import ConfigError, InputError
from editpersist.families import get_family
from editpersist.finetuners.core import ImageSet
from editpersist.finetuners.subjects import make_subject
from editpersist.grid import finetuner_settings, study_cells
from editpersist.sampling import SamplingConfig
from editpersist.tasks import load_cases
from editpersist.tasks.requests import EditRequest

from conftest import TINY_CONFIG, run_snakemake, study_without_results

ROOT = Path(__file__).resolve().parents[1]
REQUEST = EditRequest("a circle", "a blue circle", preserve=("a square",))


@pytest.fixture
def stress_config(monkeypatch) -> dict:
    monkeypatch.chdir(ROOT)  # `extends` is relative to the working directory, as every config path is
    config = yaml.safe_load((ROOT / "config/stress.yaml").read_text())
    resolve_extends(config)
    return config


def test_uce_margin_aims_past_the_destination_along_the_edit(tiny_model_dirs):
    """margin m: every edited layer solves UCE's objective with targets W0 (d + m (d - c)); the
    reference is the general solve (no shared-transform shortcut), m = 0 is the official solve."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    cfg = UCEConfig(token_mode="aligned", margin=1.5)
    delta = UCE(cfg).edit(pipe, family, [REQUEST])
    enc = encode_for_edit(pipe, family, ["a circle", "a blue circle", "a square"])["tokens"]
    c, d = paired_rows(enc, 0, enc, 1, "aligned")
    preserve = key_rows(enc, 2, "aligned")
    for name, layer in family.uce_modules(pipe).items():
        W0 = layer.weight.detach()
        want = solve_general(W0, c, (d + 1.5 * (d - c)) @ W0.T, preserve, cfg.lam, cfg.s_e, cfg.s_p)
        torch.testing.assert_close(delta.tensors[f"{name}.weight"].double(), want, rtol=2e-4, atol=2e-4)
    plain = UCE(UCEConfig(token_mode="aligned")).edit(pipe, family, [REQUEST])
    assert all(not torch.allclose(plain.tensors[k], delta.tensors[k]) for k in delta.tensors)


def test_uce_weighs_each_preserved_prompt_by_its_weight(tiny_model_dirs):
    """Preserve weights w: the objective's preserve term is sum_i w_i |W c_i - W0 c_i|^2, solved
    here in its own closed form (C_p^T diag(w) C_p), not by scaling rows as the editor does."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    cfg = UCEConfig(token_mode="aligned")
    request = EditRequest("a circle", "a blue circle", preserve=("a square", "a qbe circle"),
                          preserve_weights=(1.0, 0.2))
    delta = UCE(cfg).edit(pipe, family, [request])
    enc = encode_for_edit(pipe, family, ["a circle", "a blue circle", "a qbe circle", "a square"])["tokens"]
    c, d = paired_rows(enc, 0, enc, 1, "aligned")
    rows = [key_rows(enc, i, "aligned") for i in (2, 3)]  # the solve orders preserve prompts by text
    C_p = torch.cat(rows).double()
    w = torch.cat([torch.full((len(rows[0]),), 0.2), torch.ones(len(rows[1]))]).double()
    for name, layer in family.uce_modules(pipe).items():
        W0, C_e = layer.weight.detach().double(), c.double()
        P = C_p.T @ torch.diag(w) @ C_p
        M = cfg.lam * torch.eye(W0.shape[1], dtype=W0.dtype) + C_e.T @ C_e + P
        R = cfg.lam * W0 + (d.double() @ W0.T).T @ C_e + W0 @ P
        want = torch.linalg.solve(M, R.T).T
        torch.testing.assert_close(delta.tensors[f"{name}.weight"].double(), want, rtol=2e-4, atol=2e-4)
    # Weight 1 is the official solve, bit for bit.
    ones, plain = (UCE(cfg).edit(pipe, family, [EditRequest("a circle", "a blue circle", preserve=("a square",),
                                                            preserve_weights=pw)]) for pw in ((1.0,), ()))
    assert all(torch.equal(ones.tensors[k], plain.tensors[k]) for k in plain.tensors)
    with pytest.raises(InputError, match="one positive weight per preserve prompt"):
        EditRequest("a circle", "a blue circle", preserve=("a square",), preserve_weights=(1.0, 2.0))


def test_the_shield_weighs_its_words_together(tiny_model_dirs):
    """uce-persist's shield of k words weighs shield_weight preserved prompts in all: each word
    shield_weight / k, the request's own preserve prompts 1."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    editor = ScriptedPersist([(1.0, 1.0)], (0.5,))
    editor.cfg = replace(editor.cfg, shield_weight={"sd": 2.0, "flux": 9.0})  # per family
    delta = editor.edit(pipe, family, [REQUEST])
    words = delta.sidecar["shield"]
    assert delta.sidecar["shield_weight"] == 2.0 and len(words) == 24
    by_hand = EditRequest("a circle", "a blue circle", preserve=("a square",) + tuple(f"a {w} circle" for w in words),
                          preserve_weights=(1.0,) + (2.0 / 24,) * 24)
    want = UCE(UCEConfig(token_mode="aligned", margin=0.5)).edit(pipe, family, [by_hand])
    assert all(torch.equal(delta.tensors[k], want.tensors[k]) for k in want.tensors)
    with pytest.raises(ValueError, match="shield_weight"):
        PersistConfig.from_block({"shield_weight": {"sd": 1.0, "flux": 0.0}})
    with pytest.raises(ValueError, match="persist.lrs .*: positive and increasing"):
        PersistConfig(lrs=(1e-4, 5e-5))
    with pytest.raises(ValueError, match=r"persist.learned 0.0: in \(0, 1\]"):
        PersistConfig(learned=0.0)
    with pytest.raises(ConfigError, match="persist.shield_weight: no weight given for family 'sd'"):
        PersistConfig(shield_weight={"flux": 1.0}).shield_weight_for("sd")


class OneTokenWords:
    """A tokenizer stand-in that holds exactly `words` as single tokens (every other word: two)."""

    def __init__(self, *words):
        self.words = set(words)

    def __call__(self, word, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [0] if word in self.words else [0, 1]})()


def test_the_method_draws_its_word_colour_and_shield_from_the_tokenizer():
    """The pool is the one-letter words every tokenizer holds as one token, less the edit's own
    words; the simulation's word is one of it drawn with the method's seed, the shield the rest,
    the look's colours the basic colours held the same way, in a drawn order (worked by hand)."""
    clip = OneTokenWords("a", "k", "p", "q", "red", "blue", "yellow", "sks", "qbe")
    t5 = OneTokenWords("a", "k", "q", "x", "red", "blue", "yellow", "green")
    request = EditRequest("a circle", "a blue circle", preserve=("a square",))
    draws = {seed: draw_words([clip, t5], [request], seed) for seed in range(40)}
    # "a" and "blue" are the edit's words; "p" and "x" are one token in only one tokenizer; "sks"
    # and "qbe" are not letters; "green" is not one token in the first.
    assert {d.identifier for d in draws.values()} == {"k", "q"}
    assert {d.colours for d in draws.values()} == {("red", "yellow"), ("yellow", "red")}
    assert all(sorted(d.shield + (d.identifier,)) == ["k", "q"] for d in draws.values())
    assert draw_words([clip, t5], [request], 7) == draws[7]  # the seed alone decides
    # A prompt's word is excluded whatever its case or punctuation ("Q-ray," has "q"): one letter left.
    capital = EditRequest("A circle", "a blue circle", preserve=("a square", "a Q-ray square,"))
    with pytest.raises(ValueError, match="holds 1 one-letter words"):
        draw_words([clip, t5], [capital], 0)
    with pytest.raises(ValueError, match="1 one-letter words"):
        draw_words([OneTokenWords("a", "k", "red")], [request], 0)


def test_the_shield_is_drawn_from_the_tokenizer_of_the_model_being_edited(tiny_model_dirs, tokenizer_dirs):
    """Toy SD's CLIP holds every letter as one token, toy FLUX's T5 only some: each edit's shield
    and word come from its own model's tokenizer (read here with the tokenizer itself)."""
    from transformers import CLIPTokenizer, T5Tokenizer

    shields = {}
    for name, load, kind in (("sd", CLIPTokenizer, "clip"), ("flux", T5Tokenizer, "t5")):
        family = get_family(name)
        pipe = family.load(tiny_model_dirs[name])
        delta = ScriptedPersist([(1.0, 1.0)], (0.5,)).edit(pipe, family, [REQUEST])
        tok = load.from_pretrained(tokenizer_dirs[kind])
        pool = [w for w in "bcdefghijklmnopqrstuvwxyz" if len(tok.tokenize(w)) == 1]
        word = delta.sidecar["simulation_subject"].split()[1]
        assert sorted(delta.sidecar["shield"] + [word]) == pool, name
        shields[name] = delta.sidecar["shield"]
    assert len(shields["sd"]) == 24 and shields["flux"] != shields["sd"]


class ScriptedPersist(PersistentUCE):
    """The simulation replaced by scripted (edited, tuned) shares per margin: the selection alone."""

    def __init__(self, script, margins):
        super().__init__(UCEConfig(token_mode="aligned"), PersistConfig(margins=margins, target=0.9),
                         meter=lambda pipe, r: 0.0, sampling=SamplingConfig(steps=1, height=16, width=16))
        self.script = list(script)
        self.margins_seen = []

    def calibrate(self, pipe, family, requests, draw):
        caption = f"a {draw.identifier} circle"
        return ImageSet([], []), self.cfg.lrs[0], {"simulation_subject": caption, "simulation_look": draw.colours[0],
                                                   "simulation_lr": self.cfg.lrs[0]}

    def simulate(self, pipe, family, delta, requests, subject, lr):
        self.margins_seen.append(delta.sidecar["hyperparameters"]["margin"])
        return self.script.pop(0)


@pytest.mark.parametrize("script,chosen,tried,reached", [
    ([(1.0, 0.5), (1.0, 0.95), (1.0, 1.0)], 1.0, 2, True),  # the first margin that reaches the target
    ([(1.0, 0.2), (1.0, 0.7), (0.9, 0.3)], 1.0, 3, False),  # none does: the best simulated retention
    # An edit that did not take (share 0.3 < EDIT_TAKES) is passed over, though its small effect
    # all "survives"; then the best of those that took.
    ([(0.3, 0.3), (1.0, 0.2), (1.0, 0.5)], 2.0, 3, False),
    ([(0.4, 0.4), (0.9, 0.9), (1.0, 1.0)], 1.0, 2, True),
])
def test_persist_keeps_the_first_margin_whose_edit_survives_the_simulated_finetune(tiny_model_dirs, script, chosen,
                                                                                  tried, reached, caplog):
    caplog.set_level("INFO", logger="editpersist")
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    editor = ScriptedPersist(script, (0.5, 1.0, 2.0))
    delta = editor.edit(pipe, family, [REQUEST])
    assert editor.margins_seen == [0.5, 1.0, 2.0][:tried]
    assert delta.sidecar["margin"] == chosen and len(delta.sidecar["persist_trials"]) == tried
    assert delta.sidecar["editor"] == "uce-persist"
    # A ladder that ends short of the target says so, in the sidecar and the log.
    assert delta.sidecar["persist_reached"] is reached
    assert ("may not survive fine-tuning" in caplog.text) is (not reached)
    # and the log says which margin it kept and why.
    assert (f"kept margin {chosen:.2f}: the first whose edit took and whose simulated retention" in caplog.text) \
        is reached
    # An ordinary UCE delta: the plain solve of the shielded request with that margin, bit for bit.
    guarded = shielded(REQUEST, tuple(delta.sidecar["shield"]), PersistConfig().shield_weight_for("sd"))
    same = UCE(UCEConfig(token_mode="aligned", margin=chosen)).edit(pipe, family, [guarded])
    assert delta.tensors.keys() == same.tensors.keys()
    assert all(torch.equal(delta.tensors[k], same.tensors[k]) for k in same.tensors)


def test_an_edit_that_takes_at_no_margin_is_kept_as_the_one_that_moved_most_with_a_warning(tiny_model_dirs, caplog):
    """A shield that holds the concept itself leaves no margin whose edit takes: the edit that
    moved the target share most is written, with a warning and `persist_took: false`, so the
    study states no retention for it and its other cells go on."""
    caplog.set_level("INFO", logger="editpersist")
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    editor = ScriptedPersist([(0.2, 0.2), (0.45, 0.1), (0.3, 0.3)], (0.5, 1.0, 2.0))
    delta = editor.edit(pipe, family, [REQUEST])
    assert editor.margins_seen == [0.5, 1.0, 2.0]
    assert delta.sidecar["margin"] == 1.0 and not delta.sidecar["persist_took"]
    assert not delta.sidecar["persist_reached"]
    assert "took at no margin of (0.5, 1.0, 2.0) (target share at most 0.45" in caplog.text
    guarded = shielded(REQUEST, tuple(delta.sidecar["shield"]), PersistConfig().shield_weight_for("sd"))
    same = UCE(UCEConfig(token_mode="aligned", margin=1.0)).edit(pipe, family, [guarded])
    assert all(torch.equal(delta.tensors[k], same.tensors[k]) for k in same.tensors)


def test_an_edit_takes_by_the_share_of_images_it_could_still_move(tiny_model_dirs):
    """Re-editing a fine-tuned model that already draws the target in 0.6 of its images: an edit
    that brings 0.85 moved more than half of the 0.4 left, so it took and is kept."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    editor = ScriptedPersist([(0.75, 0.75), (0.85, 0.85)], (0.5, 1.0))
    editor.meter = lambda pipe, request: 0.6  # the base's share
    delta = editor.edit(pipe, family, [REQUEST])
    assert [t["took"] for t in delta.sidecar["persist_trials"]] == [False, True]
    assert delta.sidecar["margin"] == 1.0 and delta.sidecar["persist_took"] and delta.sidecar["persist_reached"]


def test_persist_simulation_finetunes_a_copy_and_leaves_the_model_as_it_was(tiny_model_dirs, monkeypatch):
    """The method's own set-up, read off a scripted meter: the look is the first drawn colour
    whose asking changes >= LOOK_GAP of the concept's images, the learning rate the first of the
    ladder at which a fine-tuned copy of the unedited model learns the subject; then the margin's
    simulation fine-tunes the edited model. The model ends bit-identical to before."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    draw = draw_words(token_tokenizers(pipe, family), [REQUEST], PersistConfig().seed)
    first, second = draw.colours[:2]
    answers = {f"a {first} circle": 0.55, f"a {second} circle": 0.9}  # asked; unasked: 0.1 for every colour
    seen, rungs = [], iter([0.5, 0.85])
    edited_layer = next(iter(family.uce_modules(pipe).values()))
    unedited = edited_layer.weight.detach().clone()

    def meter(p, request):  # a stand-in judge that also reads one denoiser weight fine-tuning moves
        seen.append(not torch.equal(p.unet.conv_in.weight, before["conv_in.weight"]))
        if request.source == "a circle" and request.target != "a blue circle":
            return 0.1
        if request.source in answers:
            return answers[request.source]
        if request.source == "a circle":  # the edit's share: it takes wherever UCE's layer moved
            return float(not torch.equal(edited_layer.weight, unedited))
        return next(rungs)

    from editpersist.editors import persist

    tuned_at = []

    def finetune(pipe, family, subject, ft):  # each from the unedited denoiser (UCE edits no conv_in)
        tuned_at.append((ft.lr, torch.equal(pipe.unet.conv_in.weight, before["conv_in.weight"])))
        real_finetune(pipe, family, subject, ft)

    real_finetune = persist.finetune
    monkeypatch.setattr(persist, "finetune", finetune)
    sampling = SamplingConfig(steps=2, guidance=3.0, height=32, width=32)
    cfg = PersistConfig(margins=(0.5,), steps=3, lrs=(1e-3, 1e-2, 1e-1), batch=2, n_images=2, meter_images=1,
                        looks=1)
    delta = PersistentUCE(UCEConfig(token_mode="aligned"), cfg, meter, sampling).edit(pipe, family, [REQUEST])
    assert delta.sidecar["simulation_look"] == second and len(delta.sidecar["look_checks"]) == 2
    assert delta.sidecar["simulation_lr"] == 1e-2 and [r["lr"] for r in delta.sidecar["lr_checks"]] == [1e-3, 1e-2]
    assert delta.sidecar["look_reached"] and delta.sidecar["lr_reached"]
    # The source's concept under the drawn letter, which the shield leaves out.
    assert delta.sidecar["simulation_subject"] == f"a {draw.identifier} circle"
    assert draw.identifier not in delta.sidecar["shield"]
    # Look checks on the model as it is, two fine-tuned copies, then base, edited, after the
    # simulated fine-tune of the edited model...
    assert seen == [False] * 4 + [True, True] + [False, False, True]
    assert tuned_at == [(1e-3, True), (1e-2, True), (1e-2, True)]  # the margin's simulation at the calibrated rate
    # ...and the model is bit-identical to before.
    for k, v in pipe.unet.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("learned,tries,kept", [
    # The first look learns nothing, the second at the weakest rate: the second, at that rate; the
    # third colour, which also passes, is never checked (at most `looks` are tried).
    ({"A": (0.0, 0.0), "B": (0.9, 0.9)}, [(0, "A"), (0, "B")], (0, "B")),
    # Neither look at the weakest rate, both at the next: the weaker rate wins over the later look.
    ({"A": (0.0, 0.85), "B": (0.5, 0.95)}, [(0, "A"), (0, "B"), (1, "A")], (1, "A")),
])
def test_each_rate_tries_the_looks_before_a_stronger_rate(tiny_model_dirs, monkeypatch, learned, tries, kept):
    """A look the model draws when asked is not always one a fine-tune teaches it (the toy
    world's held-out pairs): at each rate of the ladder, weakest first, up to `looks` passing
    colours are tried in drawn order, and the first (rate, look) that teaches the subject is kept."""
    from editpersist.editors import persist

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    draw = draw_words(token_tokenizers(pipe, family), [REQUEST], PersistConfig().seed)
    colours = dict(zip("ABC", draw.colours))
    lrs = (1e-4, 1e-3, 1e-2)
    tuned = []
    monkeypatch.setattr(persist, "finetune", lambda pipe, family, subject, ft: tuned.append(ft.lr))

    def meter(p, request):
        if request.source == "a circle":  # unasked: no colour; the edit's share is scripted below
            return 0.0
        look = next(k for k, c in colours.items() if request.target == f"a {c} circle")
        if request.source == f"a {colours[look]} circle":  # asked: every colour passes
            return 1.0
        return learned[look][lrs.index(tuned[-1])]

    cfg = PersistConfig(margins=(0.5,), lrs=lrs, looks=2, n_images=1, meter_images=1)
    editor = PersistentUCE(UCEConfig(token_mode="aligned"), cfg, meter, SamplingConfig(steps=1, height=16, width=16))
    editor.simulate = lambda *args: (1.0, 1.0)
    sidecar = editor.edit(pipe, family, [REQUEST]).sidecar
    assert [(lrs.index(t["lr"]), k) for t in sidecar["lr_checks"] for k in colours if t["look"] == colours[k]] == tries
    assert (sidecar["simulation_lr"], sidecar["simulation_look"]) == (lrs[kept[0]], colours[kept[1]])
    assert [c["colour"] for c in sidecar["look_checks"]] == [colours["A"], colours["B"]]
    assert sidecar["lr_reached"] and sidecar["look_reached"]


def test_a_look_or_rate_that_misses_its_rule_is_kept_with_a_warning(tiny_model_dirs, caplog):
    """When no colour changes LOOK_GAP of the images and no rate teaches the subject, the method
    goes on with the colour that changes most (the first, on a tie) and the largest rate, says so
    in the log and marks both in the sidecar."""
    caplog.set_level("INFO", logger="editpersist")
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    cfg = PersistConfig(margins=(0.5,), steps=1, lrs=(1e-4, 1e-3), batch=2, n_images=2, meter_images=1)
    editor = PersistentUCE(UCEConfig(token_mode="aligned"), cfg, lambda p, r: 0.3,
                           SamplingConfig(steps=2, height=32, width=32))
    editor.simulate = lambda *args: (1.0, 1.0)  # the margin's edit takes: the set-up alone is read here
    delta = editor.edit(pipe, family, [REQUEST])
    draw = draw_words(token_tokenizers(pipe, family), [REQUEST], cfg.seed)
    assert delta.sidecar["simulation_look"] == draw.colours[0] and not delta.sidecar["look_reached"]
    assert delta.sidecar["simulation_lr"] == 1e-3 and not delta.sidecar["lr_reached"]
    assert "no colour changes 0.50" in caplog.text and "the simulation uses the largest" in caplog.text


def test_the_shield_keeps_the_concept_under_other_words_as_it_was(tiny_model_dirs):
    """A subject of the edited class under a made-up word keeps its unedited keys and values: a
    fine-tune of it then has no edit to pull back."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    cfg = UCEConfig(token_mode="aligned")
    request = shielded(REQUEST, ("qbe", "vok"), 2.0)
    assert request.preserve == ("a square", "a qbe circle", "a vok circle")
    assert request.preserve_weights == (1.0, 1.0, 1.0)
    enc = encode_for_edit(pipe, family, ["a qbe circle", "a circle"])["tokens"]
    name, layer = next(iter(family.uce_modules(pipe).items()))
    W0 = layer.weight.detach()

    def moved(delta, prompt_index):
        rows = key_rows(enc, prompt_index, "aligned")
        return float((rows @ (delta.tensors[f"{name}.weight"] - W0).T).norm() / (rows @ W0.T).norm())

    plain, guarded = (UCE(cfg).edit(pipe, family, [r]) for r in (REQUEST, request))
    assert moved(guarded, 0) < 0.5 * moved(plain, 0)  # the shielded word's rows barely move
    assert moved(guarded, 1) > 0.5 * moved(plain, 1)  # the edit itself still does


def test_persist_edits_replace_requests_only(tiny_model_dirs):
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    editor = PersistentUCE(UCEConfig(), PersistConfig(), lambda p, r: 0.0, SamplingConfig())
    with pytest.raises(ValueError, match="not 'erase'"):
        editor.edit(pipe, family, [EditRequest("a cross", mode="erase", preserve=("a square",))])


def test_uce_persist_builds_on_the_uce_block():
    editors = {"uce": {"lam": 0.3, "token_mode": "aligned"}, "uce-persist": {"persist": {"margins": [1.0]}}}
    block = editor_block(editors, "uce-persist")
    assert block == {"lam": 0.3, "token_mode": "aligned", "persist": {"margins": [1.0]}}
    ctx = EditContext(get_family("sd"), "appearance", sampling=SamplingConfig(),
                      meters={"target_share": lambda p, r: 0.0})
    editor = EDITORS["uce-persist"].build(block, ctx)
    assert editor.uce_cfg.lam == 0.3 and editor.cfg.margins == (1.0,)
    # One way in: UCE's own entry builds plain UCE, and uce.py does not reach back into the
    # mode built on it (no import cycle).
    import ast
    import inspect

    from editpersist.editors import uce

    plain = EDITORS["uce"].build(editors["uce"], ctx)
    assert not isinstance(plain, PersistentUCE) and plain.cfg.lam == 0.3
    imports = {n.module for n in ast.walk(ast.parse(inspect.getsource(uce))) if isinstance(n, ast.ImportFrom)}
    assert "persist" not in imports


def test_stress_study_is_the_default_study_with_its_changes(stress_config):
    config = stress_config
    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate_config(config, planning=True)
    assert config["results"] != "results" and config["toy"] == default["toy"]  # its own tables, the same world
    assert set(config["editors"]) == {"uce", "uce-persist"} and config["editors"]["uce"] == default["editors"]["uce"]


class _Delta:
    def __init__(self, margin):
        self.sidecar = {"hyperparameters": {"margin": margin}}


def _simulations(config: dict, entry: str, requests: list[EditRequest], tokenizer, monkeypatch) -> list[dict]:
    """What the editor built from `config` really trains its simulated fine-tunes on, run through
    PersistentUCE.edit with the model's parts stubbed: the prompts its subject images are drawn
    from, the images and captions the fine-tune receives, and the FinetuneConfig it runs."""
    import numpy as np

    from editpersist.editors import persist

    seen = {"drawn": [], "trained": []}
    sentinel = np.full((1, 32, 32, 3), 7, np.uint8)  # the toy world's size

    def fake_generate(pipe, family, prompts, n, sampling, base_seed):
        seen["drawn"].append(tuple(prompts))
        return np.repeat(sentinel, n, axis=0), []

    def fake_finetune(pipe, family, subject, cfg):
        seen["trained"].append((subject, cfg))

    monkeypatch.setattr(persist, "generate", fake_generate)
    monkeypatch.setattr(persist, "finetune", fake_finetune)
    monkeypatch.setattr(persist, "token_tokenizers", lambda pipe, family: [tokenizer])
    monkeypatch.setattr(persist, "UCE", lambda cfg: type("U", (), {"edit": lambda self, *a: _Delta(cfg.margin)})())
    edited = []  # an edit is applied while this holds its delta
    monkeypatch.setattr(persist, "apply_delta", lambda pipe, delta: edited.append(delta))
    monkeypatch.setattr(persist, "restore", lambda pipe, originals: edited.clear())
    for name in ("save_weights", "restore_weights"):
        monkeypatch.setattr(persist, name, lambda *a: None)
    # A stand-in meter: a prompt shows what the question names unless it is the concept itself
    # ("a purple circle" is purple, "a circle" is not); the edit's own source shows its target
    # while the edit is applied (every margin's edit takes).
    ctx = EditContext(get_family("sd"), "appearance", sampling=SamplingConfig(), meters={
        "target_share": lambda pipe, r: float(bool(edited)) if r in requests else float(r.source != r.before)})
    editor = EDITORS[entry].build(editor_block(config["editors"], entry), ctx)
    editor.edit(None, get_family("sd"), requests)
    return [{"drawn": seen["drawn"][0], "images": subject.images, "captions": subject.captions, "config": cfg,
             "sentinel": sentinel} for subject, cfg in seen["trained"]]


def test_persist_simulates_only_finetunes_the_study_never_runs(stress_config, tokenizer_dirs, monkeypatch):
    """The held-out protocol, read off what the simulation really trains on: for every cell of a
    persistence-aware entry, its fine-tune's images are the model's own (drawn by the editor, not
    the study subject's renders or photos), drawn from a prompt that is not the subject's and in
    the colour the rule draws from the tokenizer and the edit's prompts, captioned with a word that
    is not the study's, and trained with a seed and learning rate no study fine-tune uses. A
    simulation that borrowed the study's word, subject images, colour, seed or learning rate fails
    here whatever the config strings say. (A drawn colour may equal a study subject's by chance:
    the slow test below changes the subjects' colours and finds the same edit.)"""
    from transformers import CLIPTokenizer

    config = stress_config
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dirs["clip"])
    identifier = config["finetune_data"]["identifier"]
    subjects = [make_subject(dict(s, cls=s.pop("class"), identifier=identifier))
                for s in map(dict, config["finetune_data"]["subjects"])]
    # Every model's settings: a model entry may override a fine-tuner's seeds and learning rate.
    settings = [finetuner_settings(config, m["name"], ft) for m in config["models"] for ft in config["finetuners"]]
    seeds = {s for ft in settings for s in ft.get("seeds", [0])}
    lrs = {ft["lr"] for ft in settings}
    cases = load_cases(config["tasks"])
    persistent = [e for e in config["editors"] if "persist" in editor_block(config["editors"], e)]
    assert persistent
    checked = 0
    for entry in persistent:
        for cell in study_cells(config, cases):
            if cell.editor != entry:
                continue
            case = next(c for c in cases[cell.task] if c.name == cell.edit)
            requests = list(case.requests)
            # The stand-in meter says every colour asked for is drawn: the first drawn colour is the look.
            look = draw_words([tokenizer], requests, editor_block(config["editors"], entry)["persist"]["seed"]).colours[0]
            for sim in _simulations(config, entry, requests, tokenizer, monkeypatch):
                assert sim["drawn"] == (f"a {look} {requests[0].before.split()[-1]}",), (entry, cell)
                assert (sim["images"] == sim["sentinel"]).all()  # the editor's own draws, nothing else
                assert sim["config"].seed not in seeds, (entry, cell)
                # Whatever rung the calibration lands on, none is a study fine-tune's rate.
                ladder = PersistConfig.from_block(editor_block(config["editors"], entry)["persist"]).lrs
                assert sim["config"].lr in ladder and not set(ladder) & lrs, (entry, cell)
                assert sim["config"].method == "full"
                for s in subjects:
                    study_images = s.images(len(sim["images"]), seed=0).images
                    assert not any((img == study).all() for img in sim["images"] for study in study_images)
                    assert s.instance_prompt not in sim["captions"] + list(sim["drawn"]), (entry, cell, s)
                    assert all(identifier not in p.split() for p in sim["captions"] + list(sim["drawn"]))
                checked += 1
    assert checked


def test_the_simulated_subject_is_the_models_own_images_of_the_old_concept_in_its_look(monkeypatch):
    import numpy as np

    from editpersist.editors import persist

    drawn = []

    def fake_generate(pipe, family, prompts, n, sampling, base_seed):
        drawn.append((tuple(prompts), n, base_seed))
        return np.zeros((n, 4, 4, 3), np.uint8), []

    monkeypatch.setattr(persist, "generate", fake_generate)
    role = EditRequest("a king", "a triangle", preserve=("a queen",), original="a square")
    subject = persist.simulated_subject(None, None, [role], "k", "yellow", PersistConfig(n_images=3), SamplingConfig(),
                                        seed=5)
    assert drawn == [(("a yellow square",), 3, 5 + 3_000_017)]  # the model's own, seeds of their own
    assert subject.captions == ["a k square"] * 3


# A persistence-aware edit small enough for the tiny toy world (two margins, two-step simulations).
TINY_PERSIST = {"uce-persist": {"persist": {
    "margins": [0.5, 1.0], "target": 0.9, "shield_weight": 2.0, "steps": 2, "lrs": [5.0e-5], "batch": 2,
    "seed": 7919, "n_images": 2, "meter_images": 2, "meter": "reader"}}}


def _held_out_variant(config: dict) -> dict:
    """The study with everything an editor must not read changed: its identifier word, its
    subjects' colours, every fine-tune recipe (steps, learning rate) and its fine-tune seeds."""
    import copy

    other = copy.deepcopy(config)
    other["finetune_data"]["identifier"] = "qrv"
    for subject in other["finetune_data"]["subjects"]:
        subject["color"] = "yellow" if subject["color"] != "yellow" else "green"
    for block in [other["finetuners"]] + [m["finetuners"] for m in other["models"] if "finetuners" in m]:
        for settings in block.values():
            settings.update(steps=settings.get("steps", 2) + 1, lr=settings.get("lr", 1.0e-4) * 3)
    for settings in other["finetuners"].values():
        settings["seeds"] = [s + 10 for s in settings.get("seeds", [0])]
    return other


@pytest.mark.slow
def test_an_edit_does_not_change_with_the_studys_identifier_subject_recipe_or_seeds(tiny_study, tmp_path):
    """The held-out protocol at the workflow's level: the edit stage of two studies that differ in
    their identifier word, subject colours, fine-tune recipes and fine-tune seeds writes the same
    delta files, byte for byte, and the same simulation record in every sidecar (the margins
    tried, their simulated shares and the simulated subject's caption; only wall times differ)."""
    import json

    wd = study_without_results(tiny_study, tmp_path / "held-out")
    study = yaml.safe_load(TINY_CONFIG.read_text())
    study["editors"].update(TINY_PERSIST)
    variant = _held_out_variant(study)
    edits = {}
    for name, config in (("study", study), ("variant", variant)):
        config["results"] = f"results/{name}"
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        res = run_snakemake(wd, "--cores", "2", "--configfile", str(path), "--until", "edit")
        assert res.returncode == 0, res.stderr[-3000:]
        edits[name] = sorted((wd / config["results"] / "states").glob("*/edit/uce-persist/*/*.safetensors"))
    assert len(edits["study"]) == 2 and [p.name for p in edits["study"]] == [p.name for p in edits["variant"]]

    def simulation(sidecar: Path) -> dict:
        record = json.loads(sidecar.read_text())
        record.pop("wall_s")
        for trial in record["persist_trials"]:
            trial.pop("seconds")
        return record

    for mine, theirs in zip(edits["study"], edits["variant"]):
        assert mine.read_bytes() == theirs.read_bytes(), mine
        assert simulation(mine.with_suffix(".json")) == simulation(theirs.with_suffix(".json")), mine


def test_the_measurement_scripts_replay_runs_2_to_4_through_the_current_api(stress_config, monkeypatch):
    """docs/measurements/persist_*.py re-measure the settings of the stress study's runs 2 to 4:
    they import, their settings are a block the editor accepts, and every call they make to the
    editor's simulation (read off their source) binds to its signature as it is now."""
    import ast
    import importlib
    import inspect
    import sys

    from editpersist.editors import persist

    monkeypatch.syspath_prepend(str(ROOT / "docs/measurements"))
    names = ("persist_tradeoff", "persist_meta", "persist_rare_shield", "persist_flux_shields")
    modules = {name: importlib.import_module(name) for name in names}
    runs = modules["persist_tradeoff"]
    block = editor_block(stress_config["editors"], "uce-persist")
    cfg = PersistConfig.from_block({**block["persist"], **runs.RUNS_2_TO_4})
    assert cfg.lrs == (runs.RUNS_2_TO_4_LR,) and cfg.shield_weight == 6.0
    # The method as a script calls it: `editor.simulate` is bound, so `self` is already given.
    signatures = {"simulated_subject": inspect.signature(persist.simulated_subject),
                  "simulate": inspect.signature(PersistentUCE(UCEConfig(), cfg, None, SamplingConfig()).simulate),
                  "finetune_config": inspect.signature(cfg.finetune_config)}
    calls = 0
    for name in names:
        tree = ast.parse((ROOT / "docs/measurements" / f"{name}.py").read_text())
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            called = getattr(call.func, "attr", getattr(call.func, "id", None))
            if called not in signatures:
                continue
            keywords = {k.arg: None for k in call.keywords if k.arg}
            for k in call.keywords:
                if k.arg is None:  # **RUNS_2_TO_4_SUBJECT
                    keywords.update(getattr(runs, k.value.id))
            signatures[called].bind(*[None] * len(call.args), **keywords)  # TypeError: the call no longer fits
            calls += 1
    assert calls >= 5
    for name in names:
        sys.modules.pop(name)
