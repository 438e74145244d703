import numpy as np
import pytest
import torch

from editpersist.editors.uce import UCE, UCEConfig
from editpersist.editors.base import EditDelta, apply_delta, restore
from editpersist.tasks.requests import EditRequest
from editpersist.editors import EDITORS
from editpersist.tasks.cases import EditCase, Probe
from editpersist.editors.closed_form import apply_transform, shared_transform, solve_general
from editpersist.editors.text_inputs import Encoded, key_rows, last_word_index, paired_rows
from editpersist.editors.time import TIME
from editpersist.families import get_family


def _random_problem(seed=0, d=12, out=7, n=3, m=4):
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(out, d, generator=g)
    C_e, D_e, C_p = (torch.randn(k, d, generator=g) for k in (n, n, m))
    return W0, C_e, D_e, C_p


@pytest.mark.parametrize("lam,s_e,s_p", [(0.5, 1.0, 1.0), (0.1, 1.0, 0.0), (2.0, 3.0, 0.25)])
def test_closed_form_satisfies_normal_equations(lam, s_e, s_p):
    W0, C_e, D_e, C_p = _random_problem()
    V_e = D_e @ W0.T
    W = solve_general(W0, C_e, V_e, C_p, lam, s_e, s_p)
    # Gradient of the objective at W is zero.
    grad = (s_e * (W @ C_e.T.double() - V_e.T.double()) @ C_e.double()
            + s_p * (W - W0.double()) @ C_p.T.double() @ C_p.double() + lam * (W - W0.double()))
    assert grad.abs().max() < 1e-9
    # And the shared-transform fast path (W = W0 T) gives the same W in float32.
    T = shared_transform(C_e, D_e, C_p, lam, s_e, s_p)
    torch.testing.assert_close((W0 @ T).double(), W, rtol=1e-4, atol=1e-4)


def test_batched_transform_matches_per_layer():
    W0, C_e, D_e, C_p = _random_problem()
    T = shared_transform(C_e, D_e, C_p, 0.5, 1.0, 1.0)
    weights = {"a": W0, "b": torch.randn(7, 12), "c": torch.randn(5, 12)}
    out = apply_transform(weights, T)
    for k, w in weights.items():
        torch.testing.assert_close(out[k], w @ T)


def test_token_choice():
    enc = Encoded(torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2),
                  torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]]))
    assert last_word_index(enc.mask[0]) == 2 and last_word_index(enc.mask[1]) == 0
    assert key_rows(enc, 0, "last").shape == (1, 2)
    assert key_rows(enc, 0, "aligned").shape == (4, 2)
    a, b = paired_rows(enc, 0, enc, 1, "aligned")
    assert a.shape == b.shape == (4, 2)


@pytest.mark.parametrize("name", ["sd", "sdxl", "flux"])
def test_uce_edits_exactly_the_family_modules_and_roundtrips(tiny_model_dirs, name, tmp_path):
    family = get_family(name)
    pipe = family.load(tiny_model_dirs[name])
    before = {k: v.clone() for k, v in pipe.components[family.denoiser].state_dict().items()}
    delta = UCE().edit(pipe, family, [EditRequest("a circle", "a blue circle", preserve=("a square",))])
    expected = {f"{k}.weight" for k in family.uce_modules(pipe)}
    assert set(delta.tensors) == expected
    # Editing alone does not touch the pipeline.
    for k, v in pipe.components[family.denoiser].state_dict().items():
        assert torch.equal(v, before[k])
    delta.save(tmp_path / "edit.safetensors")
    loaded = EditDelta.load(tmp_path / "edit.safetensors")
    assert loaded.sidecar["editor"] == "uce" and loaded.sidecar["edited_modules"] == sorted(expected)
    originals = apply_delta(pipe, loaded)
    for key, value in delta.tensors.items():
        component, pname = key.split(".", 1)
        assert torch.equal(getattr(pipe, component).get_parameter(pname), value)
    restore(pipe, originals)
    for k, v in pipe.components[family.denoiser].state_dict().items():
        assert torch.equal(v, before[k])


def test_uce_maps_source_key_to_target_value(tiny_model_dirs):
    """With lam -> 0 and no preserve term, W c_src equals W0 c_dst for the edited token."""
    from editpersist.editors.text_inputs import encode_for_edit

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    delta = UCE(UCEConfig(lam=1e-6, s_p=0.0)).edit(pipe, family, [EditRequest("a circle", "a blue circle")])
    enc = encode_for_edit(pipe, family, ["a circle", "a blue circle"])["tokens"]
    c_src, c_dst = key_rows(enc, 0, "last")[0], key_rows(enc, 1, "last")[0]
    key = next(iter(family.uce_modules(pipe)))
    W0 = family.uce_modules(pipe)[key].weight.detach()
    torch.testing.assert_close(delta.tensors[f"{key}.weight"] @ c_src, W0 @ c_dst, rtol=1e-3, atol=1e-3)


def test_time_edits_keys_and_values_by_default_and_rejects_erase(tiny_model_dirs):
    from editpersist.editors.time import TIMEConfig

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    delta = TIME().edit(pipe, family, [EditRequest("a king", "a triangle")])
    assert {k.rsplit(".", 2)[-2] for k in delta.tensors} == {"to_k", "to_v"}  # the published --with_to_k
    values_only = TIME(TIMEConfig(edit_keys=False)).edit(pipe, family, [EditRequest("a king", "a triangle")])
    assert values_only.tensors and all(k.endswith("to_v.weight") for k in values_only.tensors)
    with pytest.raises(ValueError, match="TIME only replaces"):
        TIME().edit(pipe, family, [EditRequest("a cross", mode="erase")])


def test_uce_debias_converges_with_a_ratio_meter(tiny_model_dirs):
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    calls = []

    def meter(p, request):
        # A stand-in judge whose ratio moves towards balance as the edit is refitted.
        calls.append(request.source)
        return [0.9, 0.1] if len(calls) == 1 else [0.52, 0.48]

    req = EditRequest("a triangle", mode="debias", attributes=("yellow", "blue"), ratios=(0.5, 0.5))
    delta = UCE(ratio_meter=meter).edit(pipe, family, [req])
    rounds = delta.sidecar["debias_rounds"]
    assert len(rounds) == 2 and rounds[-1]["max_gap"] <= 0.05
    step = UCEConfig().debias_step
    assert np.allclose(rounds[1]["a triangle"]["delta"], [-0.4 * step, 0.4 * step])


def test_uce_debias_halves_its_step_when_it_overshoots_and_keeps_the_best_round(tiny_model_dirs):
    """A step-like response (all yellow, then all blue) must not circle forever: the step
    halves at each sign change, and the delta returned is the best measured one."""
    from editpersist.metrics.task_metrics import attribute_shares

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    readings = iter([[1.0, 0.0], [0.0, 1.0], [0.2, 0.2], [0.9, 0.1]] + [[0.0, 1.0], [1.0, 0.0]] * 20)

    def meter(p, request):
        return next(readings)

    req = EditRequest("a triangle", mode="debias", attributes=("yellow", "blue"), ratios=(0.5, 0.5))
    cfg = UCEConfig(debias_max_rounds=6)
    delta = UCE(cfg, ratio_meter=meter).edit(pipe, family, [req])
    rounds = delta.sidecar["debias_rounds"]
    steps = [r["a triangle"]["step"] for r in rounds]
    assert steps[:3] == [cfg.debias_step, cfg.debias_step, cfg.debias_step / 2]
    # [0.2, 0.2] counts as balanced among the images that show either colour.
    assert rounds[2]["max_gap"] == 0.0 and len(rounds) == 3
    assert np.allclose(attribute_shares(np.array([0.2, 0.6])), [0.25, 0.75])


def test_uce_debias_settles_each_phrasing_once_it_is_within_tolerance(tiny_model_dirs):
    """As in the official loop, a request measured within tolerance is no longer measured or
    moved; the loop ends when every request has settled."""
    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    readings = {"a triangle": iter([[0.52, 0.48]]),
                "a photo of a triangle": iter([[1.0, 0.0], [0.8, 0.2], [0.5, 0.5]])}
    measured = []

    def meter(p, request):
        measured.append(request.source)
        return next(readings[request.source])

    reqs = [EditRequest(p, mode="debias", attributes=("yellow", "blue"), ratios=(0.5, 0.5), concept="triangle")
            for p in readings]
    delta = UCE(ratio_meter=meter).edit(pipe, family, reqs)
    rounds = delta.sidecar["debias_rounds"]
    assert measured == ["a triangle", "a photo of a triangle", "a photo of a triangle", "a photo of a triangle"]
    assert [r["settled"] for r in rounds] == [1, 1, 2]
    step = UCEConfig().debias_step
    assert rounds[2]["a photo of a triangle"]["delta"] == pytest.approx([-0.8 * step, 0.8 * step])


def test_reader_meter_reads_colours_from_its_own_seeds(tiny_model_dirs, monkeypatch):
    """The meter's images are those of the debias_meter seed stream, bit for bit, never the
    evaluation's; its shares are the reader's reading of exactly those images."""
    from editpersist.stages import edit as editing
    from editpersist.sampling import SamplingConfig, generate, image_seed, stream_seed
    from editpersist.toy.reader import read_colors

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    seen = []
    reader = editing.reader_classifier
    monkeypatch.setattr(editing, "reader_classifier", lambda images, r: seen.append(images) or reader(images, r))
    sampling = SamplingConfig(steps=2, guidance=1.0)
    request = EditRequest("a triangle", mode="debias", attributes=("yellow", "blue"), ratios=(0.5, 0.5),
                          concept="triangle")
    case = EditCase("debias", "triangle-balance", (request,), source=Probe("a triangle", "a triangle", "a triangle"))
    specs = EDITORS["uce"].meters({"debias": {"meter": "reader", "n_images": 4}})
    meter = editing.case_meters(specs, case, family, sampling, 3, None, None, "cpu")["attribute_shares"]
    shares = meter(pipe, request)
    own, jobs = generate(pipe, family, ["a triangle"], 4, sampling, base_seed=stream_seed(3, "debias_meter"))
    evaluation, _ = generate(pipe, family, ["a triangle"], 4, sampling, base_seed=stream_seed(3, "evaluation"))
    np.testing.assert_array_equal(seen[0], own)
    assert not np.array_equal(seen[0], evaluation)
    colours = read_colors(own)
    assert shares == [float(np.mean([c == a for c in colours])) for a in ("yellow", "blue")]
    eval_seeds = {image_seed(stream_seed(3, "evaluation"), "a triangle", i) for i in range(1000)}
    assert not {s for _, _, s in jobs} & eval_seeds


def test_uce_delta_is_under_two_percent_of_an_sd14_shaped_model():
    """Sizes from SD 1.4's real configs, instantiated on the meta device (no memory, no download)."""
    from editpersist.bench.reference_shapes import sd14_uce_parameters

    edited, full = sd14_uce_parameters()
    assert 1.0e9 < full < 1.1e9  # SD 1.4: ~1.07 B parameters
    assert edited / full <= 0.02, edited / full


def test_uce_can_keep_the_unconditional_branch(tiny_model_dirs):
    """With preserve_unconditional the empty prompt's keys/values move far less than without."""
    from editpersist.editors.text_inputs import encode_for_edit

    family = get_family("sd")
    pipe = family.load(tiny_model_dirs["sd"])
    empty = key_rows(encode_for_edit(pipe, family, [""])["tokens"], 0, "all")
    request = EditRequest("a circle", "a blue circle", preserve=("a square",))

    def empty_prompt_shift(preserve: bool) -> float:
        cfg = UCEConfig(token_mode="aligned", preserve_unconditional=preserve, s_p=10.0)
        delta = UCE(cfg).edit(pipe, family, [request])
        shifts = []
        for key, module in family.uce_modules(pipe).items():
            before = module.weight.detach() @ empty.T
            shifts.append(float((delta.tensors[f"{key}.weight"] @ empty.T - before).norm() / before.norm()))
        return max(shifts)

    assert empty_prompt_shift(True) < 0.5 * empty_prompt_shift(False)


def _example_method(name="example", builds_on=None, seen=None):
    """An editor the study does not ship: one registry entry declaring a debias meter."""
    from editpersist.editors.base import EditorMethod, MeterSpec

    def build(block, ctx):
        seen.update(block=block, ctx=ctx) if seen is not None else None
        return name

    spec = MeterSpec("attribute_shares", "reader", 4, "debias_meter", modes=("debias",), key="meter")
    return EditorMethod(name, modes=("replace", "debias"), build=build, parse=dict, reference_gpu_s=1.0,
                        meters=lambda block: (spec,), builds_on=builds_on)


def test_the_registry_refuses_a_name_twice_and_a_variant_of_nothing():
    from editpersist.editors import register

    assert list(register([_example_method("a"), _example_method("b", builds_on="a")])) == ["a", "b"]
    with pytest.raises(ValueError, match="'a' is registered twice"):
        register([_example_method("a"), _example_method("a")])
    with pytest.raises(ValueError, match="builds on 'c'"):
        register([_example_method("b", builds_on="c")])


def test_the_edit_stage_builds_the_meters_an_editor_declares_for_the_case_s_modes(monkeypatch):
    """The stage knows no editor: it builds what the registry entry declares, for the modes the
    case's requests have, and hands the block through untouched."""
    from editpersist.sampling import SamplingConfig
    from editpersist.stages import edit as editing

    seen = {}
    monkeypatch.setitem(EDITORS, "example", _example_method(seen=seen))
    family = get_family("sd")
    debias = EditRequest("a triangle", mode="debias", attributes=("yellow", "blue"), ratios=(0.5, 0.5),
                         concept="triangle")
    replace = EditRequest("a circle", mode="replace", target="a blue circle")
    probe = Probe("a triangle", "a triangle", "a triangle")
    rest = (None, SamplingConfig(steps=2), 3, "cpu", None)  # judge, sampling, seed, device, statistics
    built = editing.case_editor("example", {"k": 1}, family, EditCase("debias", "t", (debias,), probe), *rest)
    assert built == "example" and seen["block"] == {"k": 1}
    assert set(seen["ctx"].meters) == {"attribute_shares"}
    editing.case_editor("example", {"k": 1}, family, EditCase("appearance", "c", (replace,), probe), *rest)
    assert seen["ctx"].meters == {} and seen["ctx"].task == "appearance"


def test_every_editor_parses_its_block_through_one_base_that_refuses_unknown_keys():
    """Each registered editor's parse reads the default config's block (lists frozen to tuples)
    and refuses a key its config dataclass does not know, naming it."""
    import yaml

    from conftest import ROOT
    from editpersist.editors import editor_block
    from editpersist.editors.persist import PersistConfig

    editors = (yaml.safe_load((ROOT / "config/config.yaml").read_text())["editors"])
    editors.update({"time": {"lam": 0.1}, "uce-persist": {"persist": {"margins": [0.5, 1.0]}}})
    for name in EDITORS:
        block = editor_block(editors, name)
        EDITORS[name].parse(block)
        with pytest.raises(ValueError, match="^bogus: not a setting of"):
            EDITORS[name].parse({**block, "bogus": 1})
    cfg = PersistConfig.from_block({"margins": [0.5, 1.0], "shield_weight": {"sd": 18, "flux": 6}})
    assert cfg.margins == (0.5, 1.0) and cfg.shield_weight == {"sd": 18, "flux": 6}
    assert EDITORS["refact"].parse(editors["refact"]).templates == tuple(editors["refact"]["templates"])


def test_the_worked_example_editor_runs_through_the_edit_stage(tiny_model_dirs, tmp_path, monkeypatch):
    """docs/adding_an_editor.md's module, as printed there, registered and run by the edit
    stage the `edit` rule calls: a delta that changes nothing, with the editor's sidecar."""
    import re
    import sys
    import types

    from conftest import ROOT
    from editpersist.editors.base import EditDelta
    from editpersist.sampling import SamplingConfig
    from editpersist.stages.edit import run_edit
    from editpersist.tasks.toy import toy_cases
    from editpersist.toy.world import WorldSpec

    page = (ROOT / "docs/adding_an_editor.md").read_text()
    source = re.search(r"### 1\. The module.*?```python\n(.*?)```", page, re.S).group(1)
    module = types.ModuleType("editpersist.editors.noop")
    module.__package__ = "editpersist.editors"
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up there
    exec(compile(source, "docs/adding_an_editor.md", "exec"), module.__dict__)
    monkeypatch.setitem(EDITORS, "noop", module.METHOD)
    case = toy_cases(WorldSpec())["appearance"][0]
    out = tmp_path / "noop.safetensors"
    run_edit(tiny_model_dirs["sd"], "sd", "noop", {"label": "control"}, case, None, SamplingConfig(steps=2), 0, "cpu",
             out)
    delta = EditDelta.load(out)
    assert delta.tensors == {} and delta.sidecar["editor"] == "noop"
    assert delta.sidecar["hyperparameters"] == {"label": "control"} and delta.sidecar["edit"] == case.name
    with pytest.raises(Exception, match="bogus"):
        run_edit(tiny_model_dirs["sd"], "sd", "noop", {"bogus": 1}, case, None, SamplingConfig(steps=2), 0, "cpu",
                 tmp_path / "bad.safetensors")


def test_editors_declare_their_work_and_the_sizing_prices_it_without_knowing_them(monkeypatch):
    """What an edit computes comes from its editor (EditorMethod.work): UCE's debias loop measures
    the source and the five official phrasings, 32 images each, in each of its 30 rounds at most
    (5,760 images, judged one by one at batch 1); ReFACT optimises on its templates plus the
    prompt. An editor the sizing has never heard of is sized from its declaration alone."""
    from editpersist.editors.base import EditorMethod, EditWork
    from editpersist.sizing import footprint as fp
    from editpersist.sizing.plan import edit_work

    uce_block = {"debias": {"max_rounds": 30, "n_images": 32}}
    assert EDITORS["uce"].work(uce_block, "sd", "debias") == EditWork(meter_images=30 * 6 * 32)
    assert EDITORS["uce"].work(uce_block, "sd", "appearance") == EditWork()
    refact_block = {"layers": {"sd": {"appearance": 9, "role": 7}}, "templates": ["{}", "a photo of {}"],
                    "max_steps": 100}
    assert EDITORS["refact"].work(refact_block, "sd", "role") == EditWork(text_steps=100, text_layer=7,
                                                                         text_prompts=3)
    # uce-persist, at most: two readings per basic colour (11) for the look, the 16 images of each
    # of 2 looks, a fine-tune and a reading per learning rate (3) and look, the base's reading, two
    # readings per margin (2).
    persist_block = {"persist": {"margins": [0.5, 1.0], "steps": 50, "batch": 4, "meter_images": 8,
                                 "n_images": 16, "lrs": [1e-4, 2e-4, 4e-4], "looks": 2}}
    assert EDITORS["uce-persist"].work(persist_block, "sd", "appearance") == EditWork(
        meter_images=(2 * 11 + 3 * 2 + 1 + 2 * 2) * 8 + 2 * 16, simulated_steps=(3 * 2 + 2) * 50, simulated_batch=4)

    record = {"family": "sd", "sampling": {"height": 512, "width": 512, "steps": 50, "guidance": 7.5},
              "editor_cfg": uce_block}
    calls = dict((type(w).__name__, n) for w, n in edit_work("edit", "j", "sd14", "sd14", record, "uce", "debias",
                                                                "bf16").calls)
    assert calls["JudgeImages"] == 30 * 6 * 32 and calls["ClosedFormSolve"] == 1
    monkeypatch.setitem(EDITORS, "stepper", EditorMethod(
        "stepper", ("replace",), build=None, parse=dict, reference_gpu_s=1.0,
        work=lambda block, family, task: EditWork(text_steps=block["n"], text_layer=3, text_prompts=2)))
    work = edit_work("edit", "j", "sd14", "sd14", {**record, "editor_cfg": {"n": 7}}, "stepper", "role", "bf16")
    steps = [(w, n) for w, n in work.calls if isinstance(w, fp.RefactStep)]
    assert [(w.n_prompts, w.layer, n) for w, n in steps] == [(2, 3, 7)]
    assert not any(isinstance(w, fp.ClosedFormSolve) for w, _ in work.calls)
    assert not any(isinstance(w, fp.JudgeImages) for w, _ in work.calls)
