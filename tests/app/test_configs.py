from pathlib import Path

import pytest

from eqspike.data.tasks import GLUE_TASKS
from eqspike.distill.config import RunConfig
from eqspike.distill.yaml_io import load_yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_one_config_per_glue_task_and_a_quickstart():
    names = {path.stem for path in CONFIGS}
    assert names >= set(GLUE_TASKS) | {"quickstart"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
    config = RunConfig(**load_yaml(path))
    assert config.teacher and (config.task or config.train_file and config.validation_file)
    if path.stem in GLUE_TASKS:
        assert config.task == path.stem
    if config.train_file and (ROOT.parent / "shared").is_dir():  # the tasks of ../shared/data, from the repository root
        assert (ROOT / config.train_file).is_file() and (ROOT / config.validation_file).is_file()


def test_an_optional_setting_from_the_yaml_is_unset_by_none_on_the_command_line(tmp_path):
    """`--energy-budget none` turns a budget from the YAML file off; other values still parse as numbers."""
    import argparse

    from eqspike.distill.flags import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    path = tmp_path / "run.yaml"
    path.write_text("task: fortunes\nenergy_budget: 0.1\nmax_train_examples: 64\n")
    assert config_from_args(parser.parse_args(["--config", str(path)])).energy_budget == 0.1
    unset = config_from_args(
        parser.parse_args(["--config", str(path), "--energy-budget", "None", "--max-train-examples", "none"])
    )
    assert unset.energy_budget is None and unset.max_train_examples is None
    assert config_from_args(parser.parse_args(["--config", str(path), "--energy-budget", "0.2"])).energy_budget == 0.2
    with pytest.raises(SystemExit):
        parser.parse_args(["--energy-budget", "nothing"])


def test_the_training_forward_follows_train_for_unless_it_is_set():
    """train_forward None resolves where it is used, so a config copied with another train_for (as
    `eqspike compare` does for its T = infinity student) trains the way that train_for asks."""
    for_t = RunConfig(task="fortunes")
    assert for_t.training_forward == "simulate" and for_t.train_forward is None
    assert for_t.replace(train_for="infinity").training_forward == "solve"
    assert RunConfig(task="fortunes", train_forward="solve").training_forward == "solve"
    assert RunConfig(task="fortunes", train_for="infinity", train_forward="simulate").training_forward == "simulate"
