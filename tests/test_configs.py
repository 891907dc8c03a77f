from pathlib import Path

import pytest

from eqspike.config import RunConfig, load_yaml
from eqspike.data.tasks import GLUE_TASKS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_one_config_per_glue_task_and_a_quickstart():
    names = {path.stem for path in CONFIGS}
    assert names >= set(GLUE_TASKS) | {"quickstart"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
    config = RunConfig(**load_yaml(path))
    assert config.teacher and config.task
    if path.stem in GLUE_TASKS:
        assert config.task == path.stem
