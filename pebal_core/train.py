"""Training: PEBAL fine-tuning of the final block, full-network pretraining, checkpoints, resume, DDP.

Two modes (:class:`~pebal_core.config.TrainConfig` ``mode``; each an object of
:data:`pebal_core.training_modes.TRAINING_MODES` that the trainer asks what to train and how):

``pebal``
    Loads ``model.base`` with :func:`~pebal_core.models.checkpoint.load_model` as a 20-channel
    model (a 19-class classifier gets its abstention row, Kaiming-normal, seeded by ``seed``),
    freezes everything but ``final`` and trains it with :class:`~pebal_core.losses.PebalLoss`
    on AnomalyMix batches. The frozen part runs in eval mode under ``torch.no_grad()``, so a step
    pays no trunk gradients and the inlier segmentation of the base is kept exactly.
    ``reference_bn: true`` runs it in train mode instead, as the reference implementation does
    (``model.train()`` on the whole net): BatchNorm then uses batch statistics, its running
    statistics drift, and dropout is active, still without trunk gradients.
``pretrain``
    Trains the whole network (19 output channels) with cross-entropy on the inlier set, from
    ``model.base`` or from random initialisation; for bases that are not Cityscapes-trained.

Files in ``out_dir``: ``last.pt`` (model, optimiser, scheduler and RNG states, epoch and step;
written atomically every epoch and every ``checkpoint_every`` steps), ``history.jsonl`` (one
JSON object per ``log_every`` steps: mean losses, learning rate; plus per-epoch validation
mIoU in pretrain mode with ``data.val_split``), and at the end ``model.safetensors`` (the
trained network in the project format, with the training configuration in its metadata);
with ``snapshot_every`` also ``step_<N>.safetensors`` every N steps (for choosing a step on
held-out data).

Resume: starting again with the same ``out_dir`` continues from ``last.pt``. Every random draw
of the data pipeline is a function of ``(seed, epoch, sample index)`` and the sampler's order
of ``(seed, epoch)``, so the continued run is identical to an uninterrupted one.

Multi-GPU: launched with ``torchrun``, each process trains on its shard of every epoch's
order (``batch_size`` per process), gradients are averaged by DistributedDataParallel (over
``final`` only in pebal mode), rank 0 writes the files. ``sync_bn`` converts BatchNorm to
SyncBatchNorm on CUDA.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm import tqdm

from pebal_core.config import ConfigError, TrainConfig, TrainDataConfig, from_dict, to_dict
from pebal_core.data.anomalymix import AnomalyMix
from pebal_core.data.camvid import CamVid
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.data.coco import CocoOutliers
from pebal_core.data.coco_panoptic import CocoPanopticObjects
from pebal_core.data.in_memory import InMemory
from pebal_core.data.transforms import JointTransform
from pebal_core.denormals import flush_to_zero
from pebal_core.devices import torch_device
from pebal_core.evaluate import EvalOptions, inlier_confusion
from pebal_core.fileio import atomic_write, atomic_write_text
from pebal_core.metrics import mean_iou
from pebal_core.models.base import SegmentationModel
from pebal_core.models.checkpoint import load_model, save_checkpoint
from pebal_core.models.registry import build_model
from pebal_core.preprocessing import normalize_images
from pebal_core.training_modes import TRAINING_MODES

STATE_FILE = "last.pt"
MODEL_FILE = "model.safetensors"
HISTORY_FILE = "history.jsonl"
STATE_FORMAT = "pebal-train-state"
RESUME_FREE_KEYS = frozenset(
    {"out_dir", "device", "threads", "checkpoint_every", "snapshot_every", "log_every", "half", "data.workers"}
)
"""Configuration keys that may change between a run and its resumption (they do not change the result)."""


# ----------------------------------------------------------------------------- data
class EpochSampler(Sampler[int]):
    """Sample order of one epoch: a permutation seeded by ``(seed, epoch)``, cut to whole global
    batches, sharded by rank (``perm[rank::world]``), optionally starting ``start_batch`` batches in."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.steps = n // (batch_size * world)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.n)
        mine = order[: self.steps * self.batch_size * self.world][self.rank :: self.world]
        return iter(mine[self.start_batch * self.batch_size :].tolist())

    def __len__(self) -> int:
        return (self.steps - self.start_batch) * self.batch_size


def collate(items: list[dict]) -> dict:
    """Stack dataset items: ``image`` uint8 ``B x 3 x H x W``, ``label`` uint8 ``B x H x W``,
    ``is_ood`` bool ``B``, ``name`` list."""
    shapes = {it["image"].shape for it in items}
    if len(shapes) != 1:
        raise ValueError(f"images of one batch differ in size {sorted(shapes)}; set data.crop to a fixed size")
    images = torch.from_numpy(np.stack([it["image"] for it in items])).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.stack([it["label"] for it in items]))
    is_ood = torch.tensor([bool(it.get("is_ood", False)) for it in items])
    return {"image": images, "label": labels, "is_ood": is_ood, "name": [it["name"] for it in items]}


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def build_inliers(d: TrainDataConfig, split: str) -> Dataset:
    """The inlier set ``split`` of ``d``: Cityscapes or CamVid (``data.inliers``)."""
    if d.inliers == "camvid":
        if d.camvid is None:
            raise ConfigError("data.inliers=camvid needs data.camvid (the CamVid root with train/, trainannot/, ...)")
        return CamVid(d.camvid, split, d.camvid_table)
    return Cityscapes(d.cityscapes, split, d.labels)


def build_training_inliers(d: TrainDataConfig) -> Dataset:
    """The training inliers: ``data.inliers`` of ``data.split``, then each of ``data.extra_inliers``
    ``repeat`` times."""
    main = build_inliers(d, d.split)
    if not d.extra_inliers:
        return main
    extras = []
    for e in d.extra_inliers:
        ds = Cityscapes(e.cityscapes, e.split, e.labels, tuple(e.size) if e.size else None, e.ego_vehicle)
        extras.append(InMemory(ds) if e.in_memory else ds)
    return ConcatDataset([main, *(ds for e, ds in zip(d.extra_inliers, extras, strict=True) for _ in range(e.repeat))])


def build_outliers(d: TrainDataConfig) -> Dataset:
    """The outlier-exposure source of ``d``: COCO instances / Meta-OoD masks, or COCO panoptic segments."""
    if d.coco is None:
        raise ConfigError(f"data.ood={d.ood} needs data.coco (a COCO root); set data.ood=none to train without")
    splits = [s.strip() for s in d.coco_split.split(",")]
    if d.coco_format == "panoptic":
        parts = [CocoPanopticObjects(d.coco, s, d.coco_exclude, d.coco_min_size) for s in splits]
    else:
        parts = [CocoOutliers(d.coco, s, d.coco_format, d.coco_exclude, d.coco_min_size) for s in splits]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def build_dataset(cfg: TrainConfig) -> AnomalyMix:
    """The training set of ``cfg``: inliers (``data.inliers``), with COCO outliers in pebal mode."""
    d = cfg.data
    inliers = build_training_inliers(d)
    mode = TRAINING_MODES[cfg.mode].outliers(d)
    outliers = build_outliers(d) if mode != "none" else None
    transform = JointTransform(scale=tuple(d.scale), crop=tuple(d.crop), flip=d.flip, keep_anomaly=d.crop_keeps_anomaly)
    return AnomalyMix(
        inliers,
        outliers,
        mode,
        d.ood_ratio,
        tuple(d.paste_scale),
        transform,
        cfg.seed,
        paste=d.paste,
        road=d.road,
        road_fraction=d.road_fraction,
    )


# ----------------------------------------------------------------------------- model
def build_train_model(cfg: TrainConfig) -> SegmentationModel:
    """The network to train: ``model.base`` loaded (20 channels for pebal, 19 for pretrain) or,
    in pretrain mode without a base, ``model.arch`` initialised with ``seed``."""
    m = cfg.model
    mode = TRAINING_MODES[cfg.mode]
    n = mode.num_classes
    if m.base:
        model = load_model(m.base, arch=m.arch, num_classes=n, seed=cfg.seed, **m.arch_kwargs)
        mode.prepare(model, cfg)
        return model
    if mode.needs_base:
        raise ConfigError(f"{cfg.mode} mode fine-tunes a trained network: set model.base to its checkpoint")
    if not m.arch:
        raise ConfigError("pretrain mode without model.base needs model.arch (see `pebal models`)")
    torch.manual_seed(cfg.seed)
    try:
        return build_model(m.arch, num_classes=n, **m.arch_kwargs)
    except KeyError as e:
        raise ConfigError(f"model.arch: {e.args[0]}") from e


def make_optimizer(
    cfg: TrainConfig, params: list[nn.Parameter], stage: list[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """The optimiser over ``params``; those also in ``stage`` (an encoder stage being fine-tuned)
    learn at ``lr * optim.stage_lr_scale`` (one parameter group unless that scale differs from 1)."""
    o = cfg.optim
    slow = {id(p) for p in stage}
    if o.stage_lr_scale != 1 and slow:
        groups = [
            {"params": [p for p in params if id(p) not in slow], "lr": o.lr},
            {"params": [p for p in params if id(p) in slow], "lr": o.lr * o.stage_lr_scale},
        ]
    else:
        groups = [{"params": list(params), "lr": o.lr}]
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def poly_factor(step: int, total: int, power: float, warmup: int = 0) -> float:
    """LR multiplier at ``step`` (0-based): linear warm-up, then ``(1 - step / total) ** power``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1.0 - step / max(1, total)) ** power


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc keep freed heap memory (up to ``limit`` bytes per block) instead of returning it.

    A CPU training step frees and reallocates hundreds of MB of activations; with glibc's
    defaults large blocks go back to the kernel and are faulted in again on every step (about a
    sixth of a CPU fine-tuning step). Linux/glibc only; returns whether the settings took.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(libc.mallopt(opt, limit) == 1 for opt in (m_mmap_threshold, m_trim_threshold, m_top_pad))


# ----------------------------------------------------------------------------- distributed
@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` and choose the device.

    ``device_name``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``;
    under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK``.
    """
    try:
        device = torch_device(device_name, "device")
    except ValueError as e:
        raise ConfigError(str(e)) from e
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Distributed(rank, world, local), device


def _all_gather(obj: object, info: Distributed) -> list:
    if info.world == 1:
        return [obj]
    out: list = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did: final model path, steps, and where it resumed from."""

    model_path: Path
    global_step: int
    total_steps: int
    resumed_from: int | None
    last_losses: dict[str, float]


class Trainer:
    """One training run of a :class:`TrainConfig` (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.out_dir)
        self.progress = progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist, self.device = init_distributed(cfg.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.dataset = build_dataset(cfg)
        self.sampler = EpochSampler(len(self.dataset), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world)
        if self.sampler.steps == 0:
            raise ConfigError(
                f"the training set has {len(self.dataset)} samples, fewer than batch_size x processes = "
                f"{cfg.batch_size * self.dist.world}: lower batch_size or add data"
            )
        self.steps_per_epoch = self.sampler.steps
        full = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(full, cfg.max_steps) if cfg.max_steps else full

        self.model = build_train_model(cfg).to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.base_metadata = getattr(self.model, "checkpoint_metadata", None)
        self.mode = TRAINING_MODES[cfg.mode]
        self.teacher = self.mode.teacher(self.model, cfg)
        params = self.mode.trainable(self.model)
        self.objective = self.mode.objective(cfg.loss)
        trained = self.mode.trained_module(self.model)
        if self.dist.world > 1:
            if cfg.sync_bn and self.device.type == "cuda":
                trained = nn.SyncBatchNorm.convert_sync_batchnorm(trained)
                self.model = self.mode.replace_trained(self.model, trained)
                params = self.mode.parameters(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            trained = nn.parallel.DistributedDataParallel(trained, device_ids=ids)
        self.trained = trained
        self.params = params
        stage = self.mode.stage_parameters(self.model)
        self.optimizer = make_optimizer(cfg, params, stage)
        o = cfg.optim
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: poly_factor(s, self.total_steps, o.poly_power, o.warmup_steps)
        )
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        torch.manual_seed(cfg.seed + self.dist.rank)
        self.resumed_from: int | None = None
        self._window: dict[str, list[float]] = {}

    # -- one optimisation step ------------------------------------------------------------
    def step(self, batch: dict) -> dict[str, float]:
        """Forward, loss, backward and optimiser step on one collated batch; returns the loss terms."""
        self.mode.set_train_modes(self.model, self.cfg.reference_bn, self.cfg.frozen_bn)
        images = normalize_images(batch["image"].to(self.device, non_blocking=True), self.model.normalization)
        images = images.contiguous(memory_format=self.memory_format)
        labels = batch["label"].to(self.device, non_blocking=True).long()
        total, terms = self.mode.loss(self.model, self.trained, self.objective, images, labels, self.teacher)
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss {total.item()} at step {self.global_step} (epoch {self.epoch}); "
                f"terms { ({k: float(v) for k, v in terms.items()}) }. Lower optim.lr or check the data."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        out = {"loss": float(total.detach())}
        out.update({k: float(v) for k, v in terms.items()})
        return out

    # -- state ----------------------------------------------------------------------------
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def save_state(self) -> None:
        """Write ``last.pt`` atomically (rank 0; every rank contributes its RNG state)."""
        rngs = _all_gather(_rng_state(self.device), self.dist)
        if not self.dist.main:
            return
        state = {
            "format": STATE_FORMAT,
            "config": to_dict(self.cfg),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "world": self.dist.world,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": [{k: v.cpu() for k, v in r.items()} for r in rngs],
        }
        with atomic_write(self.state_path()) as tmp:
            torch.save(state, tmp)

    def try_resume(self) -> bool:
        """Continue from ``last.pt`` when it exists; a run with a different configuration is refused."""
        path = self.state_path()
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged state file must not be silently replaced
            raise ConfigError(
                f"cannot read the training state {path} ({type(e).__name__}: {e}); "
                "delete it to start over, or choose another out_dir"
            ) from e
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{path} is not a pebal training state; choose another out_dir")
        differences = config_differences(from_dict(TrainConfig, state["config"]), self.cfg)
        if differences:
            raise ConfigError(
                f"{self.out_dir} holds a run with a different configuration ({'; '.join(differences[:6])}); "
                "resume it with the same configuration, or choose another out_dir"
            )
        if state["world"] != self.dist.world:
            raise ConfigError(
                f"{path} was written by {state['world']} process(es), this run has {self.dist.world}; "
                "resume with the same number of processes (the sample order depends on it)"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][self.dist.rank], self.device)
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.resumed_from = self.global_step
        if self.dist.main:
            self._trim_history()
        return True

    def _trim_history(self) -> None:
        """Drop history lines logged after the checkpoint we resume from (they will be redone)."""
        path = self.out_dir / HISTORY_FILE
        if not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= self.global_step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _log(self, record: dict) -> None:
        if self.dist.main:
            with open(self.out_dir / HISTORY_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # -- the loop -------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        d = self.cfg.data
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=d.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            worker_init_fn=_worker_init if d.workers else None,
            generator=torch.Generator().manual_seed(self.cfg.seed),
            # forkserver, not fork: forking a process that runs threads (DDS, executors, BLAS) can
            # deadlock the child; workers persist across epochs so they start once
            multiprocessing_context="forkserver" if d.workers else None,
            persistent_workers=d.workers > 0,
        )

    def run(self, on_step: Callable[[Trainer], None] | None = None) -> TrainResult:
        """Train to the end (resuming if possible) and write the final model; returns a :class:`TrainResult`.

        ``on_step(trainer)`` is called after every optimiser step (progress hooks, tests). On the
        CPU it runs with flush-to-zero (denormal activations make CPU kernels ~10x slower) and
        restores the previous mode at the end.
        """
        with flush_to_zero(self.device.type == "cpu"):
            return self._run(on_step)

    def _run(self, on_step: Callable[[Trainer], None] | None) -> TrainResult:
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        last: dict[str, float] = {}
        while self.global_step < self.total_steps:
            self.dataset.set_epoch(self.epoch)
            self.sampler.set_epoch(self.epoch, self.step_in_epoch)
            steps_left = min(self.steps_per_epoch, self.step_in_epoch + self.total_steps - self.global_step)
            bar = tqdm(
                total=steps_left,
                initial=self.step_in_epoch,
                desc=f"{self.cfg.mode} epoch {self.epoch + 1}/{self.cfg.epochs}",
                disable=not (self.progress and self.dist.main),
                dynamic_ncols=True,
                mininterval=1.0,
            )
            for batch in self.loader():
                last = self.step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                self._record(last, bar)
                if self.step_in_epoch == self.steps_per_epoch:
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    self.save_state()
                elif self.cfg.checkpoint_every and self.global_step % self.cfg.checkpoint_every == 0:
                    self.save_state()
                if self.cfg.snapshot_every and self.global_step % self.cfg.snapshot_every == 0 and self.dist.main:
                    self.save_model(self.out_dir / f"step_{self.global_step:06d}.safetensors", last)
                    self.mode.set_train_modes(self.model, self.cfg.reference_bn, self.cfg.frozen_bn)
                if on_step is not None:
                    on_step(self)
                if self.global_step >= self.total_steps or self.step_in_epoch == 0:
                    break
            bar.close()
            if self.step_in_epoch == 0 and self.mode.validates(self.cfg):
                self.validate()
        if self.step_in_epoch:
            self.save_state()  # stopped by max_steps inside an epoch
        self._check_replicas()
        path = self.out_dir / MODEL_FILE
        if self.dist.main:
            self.save_model(path, last)
        if self.dist.world > 1:
            dist.barrier()
        return TrainResult(path, self.global_step, self.total_steps, self.resumed_from, last)

    def _record(self, terms: dict[str, float], bar: tqdm) -> None:
        for k, v in terms.items():
            self._window.setdefault(k, []).append(v)
        means = {k: sum(v) / len(v) for k, v in self._window.items()}
        bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
        bar.update(1)
        if self.global_step % self.cfg.log_every == 0 or self.global_step == self.total_steps:
            lr = self.optimizer.param_groups[0]["lr"]
            self._log({"step": self.global_step, "epoch": self.epoch, "lr": lr, **means, "time": time.time()})
            self._window = {}

    def validate(self) -> float:
        """Inlier mIoU of the model on ``data.val_split`` (rank 0, full images, no augmentation)."""
        if not self.dist.main:
            return float("nan")
        val = build_inliers(self.cfg.data, self.cfg.data.val_split)
        options = EvalOptions(progress=self.progress)
        conf = inlier_confusion(self.model, val, options, desc="validation")
        miou, _ = mean_iou(conf)
        self._log(
            {"step": self.global_step, "epoch": self.epoch, "val_split": self.cfg.data.val_split, "val_miou": miou}
        )
        if self.progress:
            print(f"epoch {self.epoch}: validation mIoU on {self.cfg.data.val_split} = {miou:.4f}", file=sys.stderr)
        return miou

    def _check_replicas(self) -> None:
        """With DDP, every process must end with the same trained weights (else the job is broken)."""
        if self.dist.world == 1:
            return
        checksum = float(sum(p.detach().double().sum().item() for p in self.params))
        sums = _all_gather(checksum, self.dist)
        if any(not math.isclose(s, sums[0], rel_tol=0, abs_tol=0) for s in sums):
            raise RuntimeError(f"DDP replicas diverged: parameter checksums per rank {sums}")

    def save_model(self, path: Path, last: dict[str, float]) -> Path:
        """The final network in the project format, with the training configuration in its metadata."""
        training = {
            "mode": self.cfg.mode,
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "epochs": self.global_step / self.steps_per_epoch,
            "world_size": self.dist.world,
            "last_losses": last,
        }
        if self.base_metadata is not None:
            training["base"] = {
                "file": str(self.cfg.model.base),
                "format": self.base_metadata.get("source_format"),
                "sha256": self.base_metadata.get("sha256"),
            }
        self.model.eval()
        return save_checkpoint(self.model, path, half=self.cfg.half, train_config=to_dict(self.cfg), training=training)


def config_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """``key: old -> new`` for every setting that differs, except :data:`RESUME_FREE_KEYS`."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "arch_kwargs":
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in RESUME_FREE_KEYS and a.get(k) != b.get(k)
    ]


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring."""
    return Trainer(cfg, progress=progress).run()
