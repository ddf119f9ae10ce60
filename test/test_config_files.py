"""Configuration files that inherit a base (``_base_``), the shipped training configurations, and
the registries that stand for the configuration's structural switches.

``test/flat_configs/`` holds the real-data configurations as they were written before they
inherited a base (every key spelled out); each shipped file must resolve to exactly what its flat
version does.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
import yaml

from pebal_core import cli as pebal_cli
from pebal_core.config import BASE_KEY, ConfigError, LossConfig, TrainConfig, load_config, read_config_file, to_dict
from pebal_core.losses import ABSTENTIONS, LOSS_VARIANTS, PebalLoss, pebal_objective
from pebal_core.training_modes import TRAINING_MODES

ROOT = Path(__file__).resolve().parents[1]
FLAT = Path(__file__).resolve().parent / "flat_configs"
TRAINING_CONFIGS = sorted(
    p for prefix in ("base_", "realdata_", "synthetic_", "train_") for p in (ROOT / "config").glob(f"{prefix}*.yaml")
)


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- resolution
def test_base_is_relative_to_the_file_and_merged_key_by_key(tmp_path):
    write(
        tmp_path / "bases" / "common.yaml",
        {"batch_size": 4, "data": {"crop": [64, 64], "coco_exclude": ["person", "car"]}, "optim": {"lr": 0.5}},
    )
    child = write(
        tmp_path / "runs" / "child.yaml",
        {BASE_KEY: "../bases/common.yaml", "data": {"flip": 0.0, "coco_exclude": ["bus"]}, "optim": {"name": "sgd"}},
    )
    assert read_config_file(child) == {
        "batch_size": 4,
        "data": {"crop": [64, 64], "coco_exclude": ["bus"], "flip": 0.0},  # mapping merged, list replaced
        "optim": {"lr": 0.5, "name": "sgd"},
    }
    cfg = load_config(TrainConfig, child)
    default = TrainConfig()
    assert (cfg.batch_size, cfg.data.crop, cfg.data.flip, cfg.data.coco_exclude) == (4, (64, 64), 0.0, ["bus"])
    assert (cfg.optim.lr, cfg.optim.name, cfg.optim.poly_power) == (0.5, "sgd", default.optim.poly_power)
    assert cfg.data.scale == default.data.scale  # keys no file sets keep their defaults


def test_later_bases_win_then_the_file_then_the_command_line(tmp_path):
    write(tmp_path / "a.yaml", {"batch_size": 2, "epochs": 3, "seed": 1, "optim": {"lr": 0.1}})
    write(tmp_path / "b.yaml", {"batch_size": 5, "epochs": 7, "optim": {"momentum": 0.5}})
    child = write(tmp_path / "c.yaml", {BASE_KEY: ["a.yaml", "b.yaml"], "epochs": 11})
    cfg = load_config(TrainConfig, child)
    assert (cfg.seed, cfg.batch_size, cfg.epochs, cfg.optim.lr, cfg.optim.momentum) == (1, 5, 11, 0.1, 0.5)
    cfg = load_config(TrainConfig, child, ["epochs=13", "optim.lr=0.2"])
    assert (cfg.epochs, cfg.optim.lr, cfg.batch_size) == (13, 0.2, 5)
    # a base of a base: the chain resolves depth first
    write(tmp_path / "d.yaml", {BASE_KEY: "c.yaml", "seed": 9})
    cfg = load_config(TrainConfig, tmp_path / "d.yaml")
    assert (cfg.seed, cfg.epochs, cfg.batch_size) == (9, 11, 5)


def test_a_cycle_is_one_error_naming_the_chain(tmp_path):
    write(tmp_path / "a.yaml", {BASE_KEY: "b.yaml", "epochs": 1})
    write(tmp_path / "b.yaml", {BASE_KEY: "sub/c.yaml"})
    write(tmp_path / "sub" / "c.yaml", {BASE_KEY: "../a.yaml"})
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, tmp_path / "a.yaml")
    message = str(err.value)
    assert "cycle" in message and BASE_KEY in message
    chain = [tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "sub" / "c.yaml", tmp_path / "sub" / "../a.yaml"]
    assert " -> ".join(str(p) for p in chain) in message
    write(tmp_path / "self.yaml", {BASE_KEY: "self.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(TrainConfig, tmp_path / "self.yaml")


def test_a_missing_or_malformed_base_names_the_file(tmp_path):
    child = write(tmp_path / "child.yaml", {BASE_KEY: ["missing.yaml"], "epochs": 2})
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, child)
    assert str(child) in str(err.value) and str(tmp_path / "missing.yaml") in str(err.value)
    assert "relative to the file" in str(err.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nothing.yaml")
    bad = write(tmp_path / "bad.yaml", {BASE_KEY: 3})
    with pytest.raises(ConfigError, match=f"{BASE_KEY} must be a file name or a list"):
        load_config(TrainConfig, bad)


# ----------------------------------------------------------------------------- the shipped files
@pytest.mark.parametrize("flat", sorted(FLAT.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_file_resolves_to_its_flat_version(flat):
    shipped = ROOT / "config" / flat.name
    assert BASE_KEY in yaml.safe_load(shipped.read_text()), f"{shipped.name} should inherit a base"
    assert len(shipped.read_text().splitlines()) < len(flat.read_text().splitlines())
    assert to_dict(load_config(TrainConfig, shipped)) == to_dict(load_config(TrainConfig, flat))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_training_config_loads(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.mode in TRAINING_MODES


def test_print_config_shows_the_resolved_file(capsys):
    shipped = ROOT / "config" / "realdata_roadmix_espnet.yaml"
    code = pebal_cli.main(["train", "--config", str(shipped), "--print-config", "epochs=3"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    expected = to_dict(load_config(TrainConfig, FLAT / shipped.name, ["epochs=3"]))
    assert printed == expected and BASE_KEY not in printed
    assert printed["data"]["camvid"] == "../shared/realdata/camvid"  # from two bases up


# ----------------------------------------------------------------------------- registries and terms
def test_registries_cover_exactly_the_configuration_choices():
    hints = typing.get_type_hints(LossConfig)
    assert LOSS_VARIANTS.names() == list(typing.get_args(hints["variant"]))
    assert ABSTENTIONS.names() == list(typing.get_args(hints["abstention"]))
    assert TRAINING_MODES.names() == list(typing.get_args(typing.get_type_hints(TrainConfig)["mode"]))
    with pytest.raises(ValueError, match="did you mean 'paper'"):
        PebalLoss(LossConfig(variant="papr"))  # type: ignore[arg-type]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 20, 12, 16, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, 19, (2, 12, 16), generator=g)
    targets[0, 3:7, 4:9] = 254
    targets[1, :2] = 255
    return logits, targets, torch.randn(2, 19, 12, 16, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    ("cfg", "names"),
    [
        (LossConfig(), ["pal", "ebm", "smoothness", "sparsity"]),
        (LossConfig(variant="paper", distill_weight=0.5), ["pal", "ebm", "smoothness", "sparsity", "distill"]),
        (LossConfig(abstention="ce", ebm=False, regularizer=False), ["ce"]),
        (LossConfig(variant="paper", abstention="fixed", ebm=False), ["pal", "smoothness", "sparsity"]),
        (LossConfig(regularizer=False, distill_weight=2.0), ["pal", "ebm", "distill"]),
    ],
)
def test_terms_by_name_sum_as_each_variant_documents(cfg, names):
    logits, targets, teacher = _batch()
    total, terms = PebalLoss(cfg)(logits, targets, teacher)
    assert pebal_objective(cfg).names() == names and list(terms) == names
    t = {k: float(v) for k, v in terms.items()}
    w = cfg.ebm_weight
    reg = 0.0
    if cfg.regularizer:
        reg = cfg.resolved_smoothness_weight() * t["smoothness"] + cfg.resolved_sparsity_weight() * t["sparsity"]
    main = t.get("pal", t.get("ce"))
    ebm = t.get("ebm", 0.0)
    expected = main + (w * (ebm + reg) if cfg.variant == "reference" else w * ebm + reg)
    expected += cfg.distill_weight * t.get("distill", 0.0)
    assert float(total) == pytest.approx(expected, rel=1e-12, abs=1e-12)
