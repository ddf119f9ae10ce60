"""The `make synthetic-model` recipe on a tiny world: the shipped configurations run as written.

The two stages (`config/synthetic_pretrain.yaml`, `config/synthetic_pebal.yaml`) and the
threshold step run through the same `pebal` commands the Makefile uses, with only sizes and step
counts overridden, so a configuration that no longer matches the synthetic world (a category
filter, a missing key) fails here rather than an hour into `make synthetic-model`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from pebal_core import cli
from pebal_core.alarms.operating_point import StoredPoints
from pebal_core.data.synthetic import SMALL, WorldConfig
from pebal_core.data.synthetic.writers import generate_world
from pebal_core.models.checkpoint import load_model, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.crop=[64,128]", "batch_size=2", "data.workers=0", "max_steps=2", "checkpoint_every=0"]


def _makefile_recipe() -> str:
    text = (ROOT / "Makefile").read_text()
    return text[text.index("synthetic-model: $(STAMP)") :].split("\n\n")[0]


def test_makefile_recipe_uses_the_configurations_tested_here():
    recipe = _makefile_recipe()
    assert "config/synthetic_pretrain.yaml" in recipe and "config/synthetic_pebal.yaml" in recipe
    assert re.search(r"eval .*--dataset synthetic --split LostAndFound", recipe)
    assert re.search(r"threshold .*--dataset synthetic --split LostAndFound", recipe)
    assert "--write $(SYNTHETIC_MODEL)" in recipe


@pytest.mark.slow
def test_both_stages_and_the_threshold_step_run_on_a_synthetic_world(tmp_path):
    world = tmp_path / "world"
    generate_world(world, WorldConfig(seed=3, **SMALL), progress=False)
    pretrain, pebal = tmp_path / "pretrain", tmp_path / "pebal"

    assert cli.main(["train", "--config", str(ROOT / "config/synthetic_pretrain.yaml"),
                     f"out_dir={pretrain}", f"data.cityscapes={world / 'cityscapes'}", *TINY]) == 0
    assert cli.main(["train", "--config", str(ROOT / "config/synthetic_pebal.yaml"),
                     f"out_dir={pebal}", f"model.base={pretrain / 'model.safetensors'}",
                     f"data.cityscapes={world / 'cityscapes'}", f"data.coco={world / 'coco'}", *TINY]) == 0
    shipped = tmp_path / "synthetic_model.safetensors"
    assert cli.main(["threshold", "--model", str(pebal / "model.safetensors"), "--dataset", "synthetic",
                     "--split", "LostAndFound", "--root", str(world), "--no-progress",
                     "--region", "all",  # two training steps predict no road: no drivable region yet
                     "--write", str(shipped)]) == 0

    before = load_model(pretrain / "model.safetensors").state_dict()
    after = read_checkpoint(shipped)
    floats = [t for t in after.state_dict.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)  # `half: true` keeps the file small
    stored = StoredPoints.from_metadata(after.metadata)
    assert stored.default == "fa:0.1" and stored.points["fa:0.1"].region == "all"
    model = load_model(shipped)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v.float(), before[k].half().float())}
    assert changed and all(k.startswith("final.") for k in changed)  # stage 2 trains the final block only
