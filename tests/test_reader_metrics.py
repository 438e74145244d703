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
