"""The package's structure, checked on the source: layers import downward only, no code outside
families/ asks which model family it holds, and every design.md citation names a section."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "editpersist"

# Bottom to top; a module may import its own layer and the ones below, never above.
LAYERS = [
    {"errors", "io", "runtime", "config", "tokens", "hooks", "downloads", "hub", "latents", "images", "training",
     "workflow", "chunking"},
    {"toy", "tasks", "datasets", "metrics", "judges"},
    {"families"},
    {"sampling", "editors", "finetuners"},
    {"states", "grid", "stages"},
    {"evaluation", "rehearsal"},
    {"bench", "sizing", "cli"},
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """'editpersist.editors.uce' -> 'editors' (a subpackage or a top-level module)."""
    return module.split(".")[1]


def imported_modules(path: Path, package_root: Path) -> set[str]:
    """Absolute names of the editpersist modules a file imports (relative imports resolved)."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    package = parts[:-1] if path.name != "__init__.py" else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:  # `from . import x`: x is a module of that package
                    names = [".".join(base + [a.name]) for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n for n in names if n.startswith("editpersist.")}
    return out


def upward_imports(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.parent == package and path.name == "__init__.py":
            continue
        me = unit_of(".".join(path.relative_to(package.parent).with_suffix("").parts))
        for target in imported_modules(path, package):
            if LAYER_OF[unit_of(target)] > LAYER_OF[me]:
                found.append(f"{path.relative_to(package.parent)} imports {target}")
    return found


def test_every_unit_of_the_package_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units == set(LAYER_OF), f"add to LAYERS: {sorted(units - set(LAYER_OF))}; gone: {sorted(set(LAYER_OF) - units)}"


def test_layers_import_downward_only():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself, on a made-up package: a tasks module importing an editor is reported,
    an editor importing a task is not."""
    package = tmp_path / "editpersist"
    for unit, text in (("tasks", "from ..editors.base import EditDelta\n"), ("editors", "from ..tasks import cases\n")):
        (package / unit).mkdir(parents=True)
        (package / unit / "__init__.py").write_text("")
        (package / unit / "probe.py").write_text(text)
    assert upward_imports(package) == ["editpersist/tasks/probe.py imports editpersist.editors.base"]


FAMILY_DISPATCH = re.compile(r"family(_name)?(\.name)?\s*(==|!=|in)\s*[\"'(]|[\"'](sd|sdxl|flux)[\"']\s*(==|!=)")


def family_dispatch(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if FAMILY_DISPATCH.search(line)]


def test_no_family_dispatch_outside_families():
    found = {str(p.relative_to(ROOT)): hits for p in PACKAGE.rglob("*.py")
             if "families" not in p.relative_to(PACKAGE).parts and (hits := family_dispatch(p.read_text()))}
    assert found == {}


@pytest.mark.parametrize("line", ['if family.name == "flux":', "x = 1 if family_name == 'sd' else 2",
                                  'if family.name in ("sd", "sdxl"):'])
def test_the_dispatch_check_sees_dispatch(line):
    assert family_dispatch(line) == [line]


def design_sections() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    return set(re.findall(r"^## (\d+)\.", text, flags=re.M))


def test_every_design_citation_names_a_section_of_docs_design():
    cited = {}
    for path in [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("workflow").rglob("*"),
                 *ROOT.joinpath("config").glob("*.yaml"), ROOT / "README.md", ROOT / "BENCHMARKS.md"]:
        if not path.is_file():
            continue
        for m in re.finditer(r"design\.md,? sections? ([\d, and]+)", path.read_text()):
            for number in re.findall(r"\d+", m.group(1)):
                cited.setdefault(number, []).append(str(path.relative_to(ROOT)))
    assert cited, "no citation found: the pattern is wrong"
    missing = {n: files for n, files in cited.items() if n not in design_sections()}
    assert missing == {}


def test_the_config_schema_names_exactly_the_registered_editors_and_finetuners():
    """The registries (editors.EDITORS, finetuners.methods.FINETUNERS) are the one list of
    methods; the schema, which a user's config is checked against, must name the same ones."""
    import yaml

    from editpersist.editors import EDITORS
    from editpersist.finetuners.methods import FINETUNERS

    schema = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())["properties"]
    assert set(schema["editors"]["properties"]) == set(EDITORS)
    (pattern,) = schema["finetuners"]["patternProperties"]
    assert set(re.fullmatch(r"\^\((.*)\)\$", pattern).group(1).split("|")) == set(FINETUNERS)
    evaluation = schema["evaluation"]["properties"]
    assert set(evaluation["reedit"]["items"]["enum"]) == set(FINETUNERS)
    # Only an adapter is a difference that can be applied to another state (see FinetuneMethod).
    assert set(evaluation["transfer"]["items"]["enum"]) == {n for n, m in FINETUNERS.items() if m.adapter}
