"""`pebal train`: the fine-tuning step, pretraining, kill/resume identity, DDP (gloo), CLI, configs.

Everything runs a tiny ``resnet18`` (width 0.125) on generated Cityscapes/COCO trees of 64x128
images, a few steps each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_trees import make_cityscapes, make_coco_ood_seg

from pebal_core import cli as pebal_cli
from pebal_core.config import ABLATION_ROWS, ConfigError, TrainConfig, load_config, save_config, to_dict
from pebal_core.denormals import flushing_denormals
from pebal_core.models import build_model
from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from pebal_core.train import HISTORY_FILE, MODEL_FILE, STATE_FILE, EpochSampler, Trainer, poly_factor, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trees")
    make_cityscapes(root / "cityscapes", cities={"aachen": 3, "bochum": 3})
    make_cityscapes(root / "cityscapes", split="val", cities={"ulm": 2}, seed=5)
    make_coco_ood_seg(root / "coco", n=3, size=(40, 48))
    torch.manual_seed(0)
    save_checkpoint(build_model("resnet18", num_classes=19, width=0.125), root / "base.safetensors")
    return root


def tiny(trees: Path, out: Path, *overrides: str) -> TrainConfig:
    """A tiny PEBAL run: 6 Cityscapes + 3 mixed samples, batch 2 -> 4 steps per epoch, 2 epochs."""
    return load_config(
        TrainConfig,
        None,
        [
            f"model.base={trees / 'base.safetensors'}",
            "model.arch=null",
            f"data.cityscapes={trees / 'cityscapes'}",
            f"data.coco={trees / 'coco'}",
            "data.crop=[64,128]",
            "data.ood_ratio=0.5",
            "data.workers=0",
            "batch_size=2",
            "epochs=2",
            "threads=1",
            "optim.lr=1e-3",
            "log_every=1",
            f"out_dir={out}",
            *overrides,
        ],
    )


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- the fine-tuning step
def test_finetuning_step_changes_only_final(trees, tmp_path):
    trainer = Trainer(tiny(trees, tmp_path), progress=False)
    model = trainer.model
    before = state(model)
    batch = next(iter(trainer.loader()))
    terms = trainer.step(batch)
    assert np.isfinite(terms["loss"]) and {"pal", "ebm", "smoothness", "sparsity"} <= set(terms)
    final = {id(p) for p in model.final.parameters()}
    for name, p in model.named_parameters():
        if id(p) in final:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, f"gradient reached the frozen {name}"
    after = state(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("final.") for k in changed), sorted(changed)[:5]
    assert any(k.endswith("running_mean") for k in changed), "final's BatchNorm trains"


@pytest.mark.parametrize("arch", ["enet", "espnet_p2q8"])
def test_finetuning_multi_input_final_blocks(trees, tmp_path, arch):
    """ENet and ESPNet hand ``final`` several inputs (a NamedTuple of features) and keep its layers
    at the top level of their key layout; a step must still train exactly those layers."""
    torch.manual_seed(0)
    base = tmp_path / f"{arch}.safetensors"
    save_checkpoint(build_model(arch, num_classes=20), base)
    trainer = Trainer(tiny(trees, tmp_path / "run", f"model.base={base}"), progress=False)
    model = trainer.model
    final_modules = {id(m) for m in model.final.modules()}
    final_keys = {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if name and id(module) in final_modules
        for key in module.state_dict(keep_vars=True)
    }
    before = state(model)
    terms = trainer.step(next(iter(trainer.loader())))
    assert np.isfinite(terms["loss"])
    changed = {k for k in before if not torch.equal(before[k], trainer.model.state_dict()[k])}
    assert changed and changed <= final_keys, sorted(changed - final_keys)[:5]
    trained = {k for k in final_keys if k in before and before[k].is_floating_point() and "running_" not in k}
    assert trained <= changed, sorted(trained - changed)[:5]  # every parameter of final moved


def test_reference_bn_lets_trunk_statistics_drift_without_gradients(trees, tmp_path):
    trainer = Trainer(tiny(trees, tmp_path, "reference_bn=true"), progress=False)
    before = state(trainer.model)
    trainer.step(next(iter(trainer.loader())))
    after = state(trainer.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trunk_changed = {k for k in changed if not k.startswith("final.")}
    assert trunk_changed and all("running_" in k or "num_batches" in k for k in trunk_changed)
    assert all(p.grad is None for n, p in trainer.model.named_parameters() if not n.startswith("final."))


def test_pretrain_step_trains_the_whole_network(trees, tmp_path):
    cfg = tiny(
        trees, tmp_path, "mode=pretrain", "model.base=null", "model.arch=resnet18", "model.arch_kwargs={width: 0.125}"
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.model.num_classes == 19 and len(trainer.dataset) == 6  # no outliers in pretrain mode
    trainer.step(next(iter(trainer.loader())))
    assert all(p.grad is not None for p in trainer.model.parameters())


# ----------------------------------------------------------------------------- schedule and sampler
def test_poly_schedule_and_sharded_resumable_sampler():
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0
    assert [poly_factor(s, 100, 0.9, warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    ranks = [EpochSampler(23, batch_size=3, seed=1, rank=r, world=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    shards = [list(s) for s in ranks]
    assert all(len(x) == 9 for x in shards) and not set(shards[0]) & set(shards[1])
    ranks[0].set_epoch(4, start_batch=2)
    assert list(ranks[0]) == shards[0][6:] and len(ranks[0]) == 3
    ranks[0].set_epoch(5)
    assert list(ranks[0]) != shards[0]


# ----------------------------------------------------------------------------- kill and resume
def test_killed_run_resumes_to_identical_weights(trees, tmp_path):
    overrides = ("epochs=3", "checkpoint_every=1")
    reference = train(tiny(trees, tmp_path / "a", *overrides), progress=False)
    assert reference.global_step == 12

    cfg = tiny(trees, tmp_path / "b", *overrides)
    cfg_file = tmp_path / "b.yaml"
    save_config(cfg, cfg_file)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pebal_core.cli", "train", "--config", str(cfg_file), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state_file = tmp_path / "b" / STATE_FILE
    deadline = time.monotonic() + 120
    while not state_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    killed_at = torch.load(state_file, weights_only=True)["global_step"]
    assert 1 <= killed_at < 12 and not (tmp_path / "b" / MODEL_FILE).exists(), "the kill landed mid-run"

    resumed = train(cfg, progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from >= killed_at and resumed.global_step == 12
    a = read_checkpoint(reference.model_path).state_dict
    b = read_checkpoint(resumed.model_path).state_dict
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / HISTORY_FILE).read_text().splitlines()]
    assert steps == list(range(1, 13)), "history lines after the checkpoint are redone, not duplicated"


def test_loader_workers_do_not_change_the_result(trees, tmp_path):
    a = train(tiny(trees, tmp_path / "w0", "max_steps=3"), progress=False)
    b = train(tiny(trees, tmp_path / "w2", "max_steps=3", "data.workers=2"), progress=False)
    sa, sb = read_checkpoint(a.model_path).state_dict, read_checkpoint(b.model_path).state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_refuses_a_different_configuration(trees, tmp_path):
    train(tiny(trees, tmp_path, "max_steps=2"), progress=False)
    with pytest.raises(ConfigError, match=r"different configuration \(optim.lr: 0.001 -> 0.002"):
        train(tiny(trees, tmp_path, "max_steps=2", "optim.lr=2e-3"), progress=False)
    again = train(tiny(trees, tmp_path, "max_steps=2", "data.workers=1"), progress=False)  # harmless change
    assert again.resumed_from == 2 and again.global_step == 2


# ----------------------------------------------------------------------------- the pipeline
def test_pretrain_then_pebal_produces_a_loadable_20_class_model(trees, tmp_path):
    pre_cfg = tiny(
        trees,
        tmp_path / "pre",
        "mode=pretrain",
        "model.base=null",
        "model.arch=resnet18",
        "model.arch_kwargs={width: 0.125}",
        "optim.name=adamw",
        "data.val_split=val",
    )
    pre = train(pre_cfg, progress=False)
    base = load_model(pre.model_path)
    assert base.num_classes == 19 and base.checkpoint_metadata["train_config"] == to_dict(pre_cfg)
    history = [json.loads(x) for x in (tmp_path / "pre" / HISTORY_FILE).read_text().splitlines()]
    assert [h["epoch"] for h in history if "val_miou" in h] == [1, 2]
    assert all(0.0 <= h["val_miou"] <= 1.0 for h in history if "val_miou" in h)

    cfg = tiny(trees, tmp_path / "pebal", f"model.base={pre.model_path}")
    result = train(cfg, progress=False)
    model = load_model(result.model_path)
    meta = model.checkpoint_metadata
    assert model.num_classes == 20 and meta["arch"] == "resnet18" and meta["arch_kwargs"] == {"width": 0.125}
    assert meta["train_config"] == to_dict(cfg) and meta["training"]["global_step"] == 8
    assert meta["training"]["base"]["sha256"] == base.checkpoint_metadata["sha256"]
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("final.")}
    for k, v in trunk.items():
        assert torch.equal(v, base.state_dict()[k]), f"the frozen {k} changed"
    x = torch.randn(1, 3, 64, 128)
    assert torch.equal(base.eval().features(x), model.eval().features(x))


def test_training_flushes_denormals_and_restores_the_mode(trees, tmp_path):
    torch.set_flush_denormal(False)  # the process default
    during: list[bool] = []
    Trainer(tiny(trees, tmp_path, "max_steps=2", "device=cpu"), progress=False).run(
        on_step=lambda _: during.append(flushing_denormals())
    )
    assert during == [True, True] and not flushing_denormals()


@pytest.mark.parametrize("row", sorted(ABLATION_ROWS))
def test_every_ablation_row_trains(trees, tmp_path, row):
    cfg = tiny(trees, tmp_path, *ABLATION_ROWS[row], "max_steps=2")
    result = train(cfg, progress=False)
    assert result.global_step == 2 and np.isfinite(result.last_losses["loss"])
    assert ("ce" in result.last_losses) == (cfg.loss.abstention == "ce")
    assert ("ebm" in result.last_losses) == cfg.loss.ebm
    assert ("smoothness" in result.last_losses) == cfg.loss.regularizer


# ----------------------------------------------------------------------------- command line
def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pebal_core.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_train_end_to_end_and_user_errors(trees, tmp_path, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    save_config(tiny(trees, tmp_path / "run"), cfg_file)
    out = cli("train", "--config", str(cfg_file), "max_steps=3", "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"wrote {tmp_path / 'run' / MODEL_FILE}" in out.stdout
    model = load_model(tmp_path / "run" / MODEL_FILE)
    assert model.checkpoint_metadata["train_config"]["max_steps"] == 3
    # the user errors through the same main in this process (the run above is the console command)
    capsys.readouterr()
    code = pebal_cli.main(
        [
            "train",
            "--config",
            str(cfg_file),
            f"data.cityscapes={tmp_path / 'missing'}",
            "out_dir=" + str(tmp_path / "x"),
        ]
    )
    bad = capsys.readouterr().err
    assert code == 2 and "Traceback" not in bad
    assert bad.startswith("pebal: error: Cityscapes root") and str(tmp_path / "missing") in bad
    code = pebal_cli.main(["train", "--config", str(cfg_file), "optim.lrate=1"])
    assert code == 2 and "unknown key(s) optim.lrate" in capsys.readouterr().err


def test_example_configs_are_valid_and_carry_the_paper_values():
    files = sorted((ROOT / "config").glob("train_*.yaml"))
    assert {f.name for f in files} >= {"train_pebal_cityscapes.yaml", "train_pretrain_cityscapes.yaml"}
    for f in files:
        load_config(TrainConfig, f)
    paper = load_config(TrainConfig, ROOT / "config" / "train_pebal_cityscapes.yaml")
    assert paper.mode == "pebal" and paper.model.arch == "wrn38"
    assert (paper.optim.name, paper.optim.lr, paper.optim.poly_power) == ("adam", 1e-5, 0.9)
    assert (paper.batch_size, paper.data.crop, paper.data.scale) == (8, (900, 900), (0.5, 2.0))
    assert (paper.loss.m_in, paper.loss.m_out, paper.loss.ebm_weight, paper.data.ood_ratio) == (-12, -6, 0.1, 0.1)
    assert to_dict(paper)["loss"] == to_dict(TrainConfig())["loss"]


# ----------------------------------------------------------------------------- DDP
def test_torchrun_two_processes_gloo(trees, tmp_path):
    cfg_file = tmp_path / "ddp.yaml"
    save_config(tiny(trees, tmp_path / "ddp", "epochs=1", "device=cpu"), cfg_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "pebal_core.cli", "train", "--config", str(cfg_file), "--no-progress",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("wrote") == 1, "only rank 0 reports"
    meta = load_model(tmp_path / "ddp" / MODEL_FILE).checkpoint_metadata
    # 9 samples, 2 per process and step, 2 processes -> 2 steps; replicas were checked equal at the end
    assert meta["training"]["world_size"] == 2 and meta["training"]["global_step"] == 2
    last = torch.load(tmp_path / "ddp" / STATE_FILE, weights_only=True)
    assert last["world"] == 2 and len(last["rng"]) == 2
