import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
DESIGN = README.parent / "docs" / "design.md"


def test_design_python_example_of_the_core_runs(capsys):
    """docs/design.md's example of the core used from Python (the README links to it)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DESIGN.read_text(), flags=re.S) if "EquilibriumLayer(" in b]
    assert blocks, "docs/design.md has no python example of the core"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/design.md", "exec"), namespace)
    out, solved, spiking = namespace["out"], namespace["out"].rates["output"], namespace["spiking"].rates["output"]
    assert out.stats.iterations > 1 and out.stats.residual < 1e-3
    assert out.stats.backward_iterations is not None
    assert (spiking - solved).abs().mean() < 4 / 64


def test_readme_commands_match_ci():
    readme, ci = README.read_text(), (README.parent / ".ci" / "run").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quickstart, flags=re.S)
    assert len(commands) == 2
    for command in commands:
        assert command in ci, f"CI does not run the README command: {command}"
