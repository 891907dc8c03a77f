"""The package's layers (docs/design.md, Layout), checked on the imports themselves: a lower layer
never imports a higher one (``distill``, where ``RunConfig`` lives, is above them all)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eqspike"
# Each layer and the eqspike modules it may import (besides itself, ``errors`` and ``version``).
ALLOWED = {
    "runtime": set(),
    "core": {"runtime"},
    "data": {"runtime"},
    "students": {"core", "runtime", "data"},
    "teacher": {"core", "runtime", "data", "students"},
}


def imported_modules(path: Path) -> set[str]:
    """Every ``eqspike...`` module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} if node.module != "eqspike" else {f"eqspike.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n for n in names if n == "eqspike" or n.startswith("eqspike.")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "eqspike"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in imported_modules(path):
            other = layer_of(module)
            if other not in ALLOWED[layer] | {layer, "errors", "version"}:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The parser finds the imports the rule is about, including one inside a function."""
    source = tmp_path / "module.py"
    source.write_text(
        "import torch\nfrom eqspike.core.neurons import IFPopulation\n\n"
        "def f():\n    from eqspike.analysis.energy import price\n    from eqspike import config\n"
    )
    assert imported_modules(source) == {"eqspike.core.neurons", "eqspike.analysis.energy", "eqspike.config"}
    assert {layer_of(m) for m in imported_modules(source)} == {"core", "analysis", "config"}


def test_the_student_kind_is_dispatched_through_the_registry_only():
    """Outside ``students/`` nothing branches on a kind's name: what differs comes from ``STUDENTS[kind]``."""
    import re

    branch = re.compile(r"student_type\s*(==|!=)|student_type\s+(not\s+)?in\s*[(\[{]")
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "students" not in path.relative_to(PACKAGE).parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if branch.search(line)
    ]
    assert not wrong, wrong


def test_every_student_kind_declares_what_the_trainer_reads():
    from eqspike.distill.config import RunConfig
    from eqspike.distill.students import BUILDERS
    from eqspike.students import STUDENTS

    settings = RunConfig(task="fortunes")
    for kind, cls in STUDENTS.items():
        assert cls.kind == kind and cls.description and isinstance(cls.spiking, bool)
        assert cls.run_name(settings) and cls.train_for(settings) in (None, "time_steps", "infinity")
        assert set(cls.kind_settings) <= set(RunConfig.__dataclass_fields__)
    # and distill/ builds every kind from a run's settings (the student layer never reads RunConfig)
    assert set(BUILDERS) == set(STUDENTS)


def test_the_drawn_architecture_and_the_layout_sections_follow_the_code():
    """docs/architecture.json (drawn with docs/architecture.png by ``python -m eqspike.tools.import_graph``)
    is the graph of today's imports, and the README's and docs/design.md's layout sections name every
    sub-package."""
    import json

    from eqspike.tools.import_graph import import_graph, rows

    drawn = json.loads((PACKAGE.parent / "docs" / "architecture.json").read_text())
    assert drawn == import_graph(), "docs/architecture.png is stale: run python -m eqspike.tools.import_graph"
    assert rows(drawn)["core"] < rows(drawn)["students"] < rows(drawn)["teacher"] < rows(drawn)["distill"]
    folders = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## How it works, and the layout") :]
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    design = design[design.index("## Layout") :]
    for section in (layout[: layout.index("\n## ", 5)], design):
        assert [f for f in folders if f"`{f}/`" not in section] == []


def test_a_cycle_is_refused_when_the_rows_are_drawn():
    from eqspike.tools.import_graph import rows

    with pytest.raises(ValueError, match="import cycle: a -> b -> a"):
        rows({"a": ["b"], "b": ["a"]})


def test_no_module_over_350_lines_and_no_function_over_60():
    """Modules small enough to read whole, functions that fit a screen (issue 25); a function's length is
    its span in the source, docstring included."""
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 350:
            long_modules.append(f"{path.relative_to(PACKAGE.parent)} ({len(source.splitlines())} lines)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert not long_modules and not long_functions, long_modules + long_functions
