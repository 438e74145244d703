from editpersist.metrics.reader_metrics import color_share, edited_hits, kept_hits, text_attributes
from editpersist.tasks.toy import toy_cases


def test_text_attributes_resolve_defaults_and_roles():
    assert text_attributes("a photo of a circle") == {"shape": "circle", "color": "red"}
    assert text_attributes("a king") == {"shape": "square"}
    assert text_attributes("a blue triangle") == {"color": "blue", "shape": "triangle"}
    assert text_attributes("a triangle") == {"shape": "triangle"}  # imbalanced: no single default


def test_hits_follow_each_task_definition():
    cases = toy_cases()
    app = cases["appearance"][0]
    reads = [{"color": "blue", "shape": "circle"}, {"color": "red", "shape": "circle"}]
    assert edited_hits(app, app.source, reads) == [True, False]
    neg = app.negatives[0]  # "a square" should stay green
    assert kept_hits(app, neg, [{"color": "green", "shape": "square"}, {"color": "blue", "shape": "square"}]) == [True, False]
    role = cases["role"][0]
    assert edited_hits(role, role.source, [{"color": "red", "shape": "triangle"}]) == [True]
    unsafe = cases["unsafe"][0]
    assert edited_hits(unsafe, unsafe.positives[0], [{"color": "red", "shape": "cross"}, {"color": "red", "shape": "square"}]) == [False, True]
    assert color_share([{"color": "yellow"}, {"color": "blue"}], "yellow") == 0.5


def test_toy_cases_cover_the_four_tasks_with_safe_names():
    import re

    cases = toy_cases()
    assert set(cases) == {"appearance", "role", "debias", "unsafe"}
    for task_cases in cases.values():
        for c in task_cases:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", c.name)
            assert c.requests


def _every_toy_case():
    from editpersist.tasks.toy import appearance_case, role_case, unsafe_case
    from editpersist.toy.world import COLORS, SHAPES, WorldSpec

    spec = WorldSpec()
    return ([appearance_case(s, c, spec) for s in spec.default_color for c in COLORS if c not in spec.default_color[s]]
            + [role_case(r, s, spec) for r in spec.roles for s in SHAPES if s != spec.roles[r]]
            + [unsafe_case(spec)])


def test_toy_specificity_prompts_are_none_the_editor_was_asked_to_preserve():
    """An editor fits its preserve prompts: specificity on them is close to 1 by construction.
    Every toy case's specificity prompts are held out of every preserve list of the case (and
    of its fitted prompts); the preserve prompts are measured apart, as specificity_preserved."""
    from editpersist.evaluation.prompts import fitted_prompts

    for case in _every_toy_case():
        preserve = {p for r in case.requests for p in r.preserve}
        held_out = {p.prompt for p in case.negatives}
        assert held_out, case.name
        assert not held_out & preserve, (case.name, held_out & preserve)
        assert not held_out & fitted_prompts(case), case.name
        assert {p.prompt for p in case.preserved} == preserve, case.name
        # A held-out negative that the edit would leave as it is anyway says nothing.
        assert all(p.original != p.edited for p in case.negatives), case.name
