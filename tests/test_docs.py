"""The documentation points at things that exist: every relative link and #anchor of the
Markdown docs resolves, every repository path a doc names in backticks exists, and every config
key config/README.md documents is in config/config.schema.yaml. Runs in well under a second."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md", ROOT / "config" / "README.md",
               *ROOT.joinpath("docs").rglob("*.md")})
# Where a path a doc names may live: next to the doc, at the root, or inside the package
# ("editors/uce.py" is src/editpersist/editors/uce.py).
SEARCH = (ROOT, ROOT / "src" / "editpersist", ROOT / "src")
# Extensions that mark a backticked word as a repository file even without a "/".
REPO_EXTENSIONS = (".py", ".md", ".yaml", ".yml", ".smk", ".toml", ".cff", ".lock", ".png")
# Paths docs may name that are not in the repository: what the workflow and the tools create
# (outputs, built inputs, environments), and the file a worked example asks the reader to write.
NOT_IN_REPOSITORY = ("results/", "resources/", "rehearsal/", "logs/", "benchmarks/", ".venv/", "report.html",
                     "/path/to/", "src/editpersist/editors/noop.py")
# Keys a config may hold that are resolved before the schema sees it (config.resolve_extends).
FILE_LEVEL_KEYS = {"extends", "changes"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text outside fenced code blocks (links and paths in examples are not claims)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, every character but letters,
    digits, '_', '-' and spaces removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(doc: Path) -> list[str]:
    out = []
    for target in LINK.findall(prose(doc.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            out.append(f"{target}: no such anchor")
    return out


def looks_like_path(word: str) -> bool:
    if any(c in word for c in " <>{}…=:,;'\"()[]|$") or word.startswith(("-", "http")):
        return False
    return "/" in word or word.endswith(REPO_EXTENSIONS)


def exists(word: str, doc: Path) -> bool:
    if word.startswith(NOT_IN_REPOSITORY):
        return True
    for base in (doc.parent, *SEARCH):
        if "*" in word:
            if any(base.glob(word)):
                return True
        elif (base / word).exists():
            return True
    return False


def missing_paths(doc: Path) -> list[str]:
    words = {m.group(2).strip() for m in CODE.finditer(prose(doc.read_text()))}
    return sorted(w for w in words if looks_like_path(w) and not exists(w, doc))


def schema_node(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def children(schema: dict, node: dict) -> list[dict]:
    """The node and every branch of its oneOf/anyOf/allOf, references followed."""
    node = schema_node(schema, node)
    out = [node]
    for branch in (*node.get("oneOf", ()), *node.get("anyOf", ()), *node.get("allOf", ())):
        out += children(schema, branch)
    return out


def key_in_schema(schema: dict, key: str) -> bool:
    """Whether a dotted key ("evaluation.quality.max_captions", "models[].sampling.height",
    "finetuners.<method>.steps": <...> is any name the node allows) is a key of the schema."""
    nodes = [schema]
    for part in key.split("."):
        name, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        found = []
        for node in (c for n in nodes for c in children(schema, n)):
            if name in node.get("properties", {}):
                found.append(node["properties"][name])
            patterns = node.get("patternProperties", {})
            extra = node.get("additionalProperties")
            if name.startswith("<") and name.endswith(">"):  # any child
                found += [*node.get("properties", {}).values(), *patterns.values()]
                found += [extra] if isinstance(extra, dict) else []
            else:
                found += [v for p, v in patterns.items() if re.search(p, name)]
        if items:
            found = [c["items"] for f in found for c in children(schema, f) if isinstance(c.get("items"), dict)]
        if not found:
            return False
        nodes = found
    return True


def documented_keys(text: str) -> list[str]:
    """The keys config/README.md documents: the backticked first cell of every table row."""
    return re.findall(r"^\|\s*`([^`]+)`\s*\|", prose(text), flags=re.M)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_anchor_resolves(doc):
    assert broken_links(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_names_exists(doc):
    assert missing_paths(doc) == []


def test_every_key_config_readme_documents_is_in_the_schema():
    schema = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())
    keys = documented_keys((ROOT / "config" / "README.md").read_text())
    assert len(keys) > 50, "the key tables were not found: the pattern is wrong"
    assert [k for k in keys if k not in FILE_LEVEL_KEYS and not key_in_schema(schema, k)] == []


@pytest.mark.parametrize("heading, anchor", [
    # Anchors GitHub gives these headings (read off rendered pages).
    ("Edits that survive fine-tuning (`config/stress.yaml`, `uce-persist`)",
     "edits-that-survive-fine-tuning-configstressyaml-uce-persist"),
    ("3. Contracts", "3-contracts"),
    ("UCE: token choice and the unconditional branch", "uce-token-choice-and-the-unconditional-branch"),
    ("Cost model for `config/paper.yaml` on one H100", "cost-model-for-configpaperyaml-on-one-h100"),
    ("The `results/toy/quality.json` file", "the-resultstoyqualityjson-file"),
    ("snake_case and CamelCase", "snake_case-and-camelcase"),
])
def test_slug_is_githubs(heading, anchor):
    assert slug(heading) == anchor


def test_the_checks_see_what_is_broken(tmp_path):
    """Each check flags a broken link, anchor, path and key, so a passing run means something."""
    doc = tmp_path / "doc.md"
    (tmp_path / "other.md").write_text("# A heading\n")
    doc.write_text("# Here\n[ok](other.md#a-heading) [self](#here) [gone](nothing.md) [bad](other.md#b-heading)\n"
                   "```\n[in code](nowhere.md)\n```\n`src/editpersist/grid.py` `editors/uce.py` `no/such/file.py`\n"
                   "`results/persistence.csv` `a sentence with/slash` `sd`\n")
    assert broken_links(doc) == ["nothing.md: no such file", "other.md#b-heading: no such anchor"]
    assert missing_paths(doc) == ["no/such/file.py"]
    schema = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())
    assert key_in_schema(schema, "evaluation.quality.max_captions")
    assert key_in_schema(schema, "models[].sampling.height")
    assert key_in_schema(schema, "finetuners.<method>.steps")
    assert key_in_schema(schema, "finetune_data.subjects[].description")
    assert key_in_schema(schema, "editors.uce-persist.persist.shield_weight")
    assert key_in_schema(schema, "evaluation.min_effect.<metric>")
    assert not key_in_schema(schema, "evaluation.quality.max_caption")
    assert not key_in_schema(schema, "models[].sampling.depth")
    assert not key_in_schema(schema, "models.name")


def test_citation_cites_this_software_and_the_paper_the_readme_cites():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= set(cff) and cff["type"] == "software"
    (paper,) = cff["references"]
    arxiv = re.search(r"arXiv:(\d{4}\.\d{5})", (ROOT / "README.md").read_text()).group(1)
    assert paper["url"] == f"https://arxiv.org/abs/{arxiv}"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and cff["license"] == "Apache-2.0"
