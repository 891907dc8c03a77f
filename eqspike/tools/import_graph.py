"""The package's import graph, drawn from the code: ``python -m eqspike.tools.import_graph`` writes
docs/architecture.png (each sub-package or top-level module a box, above what it imports) and
docs/architecture.json (the edges, which tests/test_layering.py holds against the code).

A unit is a sub-package (``core``, ``students``, ..., ``app``) or a module at the package root
(``config``, ``errors``, ``version``); an edge A -> B says some file of A imports something of B, at its top or inside a
function. A unit's row is the length of the longest chain of imports below it.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
SKIP = {"__init__", "__main__", "tools"}  # the facade, the entry point and this tool
EVERYWHERE = {"errors", "version"}  # imported from every layer: in the JSON, left out of the drawing


def unit_of(module: str) -> str | None:
    """``eqspike.students.common`` -> ``students``; ``eqspike.distill.config`` -> ``config``; None outside eqspike."""
    parts = module.split(".")
    return parts[1] if parts[0] == "eqspike" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"eqspike.{a.name}" for a in node.names} if node.module == "eqspike" else {node.module}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, list[str]]:
    """For each unit, the other units it imports (sorted)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        unit = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        if unit in SKIP or "__pycache__" in relative.parts:
            continue
        targets = {unit_of(m) for m in _imports(path)} - {None, unit} - SKIP
        graph.setdefault(unit, set()).update(t for t in targets if t is not None)
    return {unit: sorted(targets) for unit, targets in sorted(graph.items())}


def rows(graph: dict[str, list[str]]) -> dict[str, int]:
    """Row of each unit: 0 for one that imports no other, else 1 + the highest row it imports."""
    row: dict[str, int] = {}

    def depth(unit: str, path: tuple[str, ...] = ()) -> int:
        if unit in path:
            raise ValueError(f"import cycle: {' -> '.join(path + (unit,))}")
        if unit not in row:
            row[unit] = 1 + max((depth(t, path + (unit,)) for t in graph.get(unit, [])), default=-1)
        return row[unit]

    for unit in graph:
        depth(unit)
    return row


def draw(graph: dict[str, list[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = {unit: [t for t in targets if t not in EVERYWHERE] for unit, targets in graph.items() if unit not in EVERYWHERE}
    row = rows(graph)
    by_row: dict[int, list[str]] = {}
    for unit in sorted(graph, key=lambda u: (row[u], u)):
        by_row.setdefault(row[unit], []).append(unit)
    width = max(3, max(len(units) for units in by_row.values()))
    position = {unit: ((i + 0.5) * width / len(units), r) for r, units in by_row.items() for i, unit in enumerate(units)}
    fig, ax = plt.subplots(figsize=(2.2 * width + 1, 1.0 * len(by_row) + 1))
    for unit, targets in graph.items():
        for target in targets:
            ax.annotate(
                "",
                xy=position[target],
                xytext=position[unit],
                arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.8, "shrinkA": 14, "shrinkB": 14},
            )
    for unit, (x, y) in position.items():
        folder = (PACKAGE / unit).is_dir()
        ax.text(
            x,
            y,
            unit + ("/" if folder else ".py"),
            ha="center",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round", "fc": "#dbe9f6" if folder else "#f3f3f3", "ec": "0.4"},
        )
    ax.set_xlim(0, width)
    ax.set_ylim(-0.6, max(by_row) + 0.6)
    ax.axis("off")
    ax.set_title("eqspike: each unit above what it imports\n(errors.py and version.py, imported by all, left out)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(PACKAGE.parent / "docs"), help="folder for architecture.png and .json")
    args = parser.parse_args(argv)
    graph = import_graph()
    out = Path(args.out)
    (out / "architecture.json").write_text(json.dumps(graph, indent=1) + "\n")
    draw(graph, out / "architecture.png")
    for unit in sorted(graph, key=lambda u: (rows(graph)[u], u)):
        print(f"{unit}: {', '.join(graph[unit]) or '-'}")
    print(f"wrote {out / 'architecture.png'}, {out / 'architecture.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
