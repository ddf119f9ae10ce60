"""Training modes (``TrainConfig.mode``): which part of the network trains, on which data, with which terms.

Each mode is an object in :data:`TRAINING_MODES`; the trainer (:mod:`pebal_core.train`) asks it
instead of branching on the mode's name.

``pebal``
    Fine-tunes the block ``model.finetune`` (``final`` by default) of a trained 20-channel network
    with :class:`~pebal_core.losses.PebalLoss` on AnomalyMix batches (``data.ood``). The frozen
    trunk runs in eval mode under ``torch.no_grad()`` (``reference_bn``: train mode, as the
    reference implementation); ``frozen_bn`` keeps the fine-tuned block's BatchNorm in eval mode.
``pretrain``
    Trains the whole 19-channel network with :class:`~pebal_core.losses.InlierCrossEntropy` on
    the inlier set alone, with validation mIoU after every epoch when ``data.val_split`` is set.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pebal_core.config import ConfigError, LossConfig, TrainConfig, TrainDataConfig
from pebal_core.labels import NUM_CLASSES
from pebal_core.losses import InlierCrossEntropy, LossInputs, PebalLoss, TermSum
from pebal_core.models.base import SegmentationModel, upsample
from pebal_core.registry import Registry

Terms = dict[str, torch.Tensor]


def freeze_for_finetuning(model: SegmentationModel) -> list[nn.Parameter]:
    """Make only the fine-tuned block trainable; returns its parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.finetune_parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def finetune_logits(
    model: SegmentationModel, final: nn.Module, images: torch.Tensor, teacher: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PEBAL forward: the frozen ``features`` without autograd, then ``final`` (possibly DDP-wrapped)
    on :meth:`~pebal_core.models.base.SegmentationModel.final_inputs`; with ``teacher`` (a frozen
    copy of the base's ``final``) also its logits on the same features, else None. Logits
    ``B x C x H x W`` at the size of ``images``."""
    size = tuple(images.shape[-2:])
    with torch.no_grad():
        feats = model.features(images)
        inputs = model.final_inputs(feats)
        ref = upsample(teacher(*inputs), size) if teacher is not None else None
    return upsample(final(*inputs), size), ref


class PebalMode:
    """``pebal``: fine-tuning of one block with the PEBAL objective (see the module docstring)."""

    num_classes = NUM_CLASSES + 1
    needs_base = True

    def outliers(self, d: TrainDataConfig) -> str:
        """The AnomalyMix mode of the training set."""
        return d.ood

    def prepare(self, model: SegmentationModel, cfg: TrainConfig) -> None:
        """Choose the fine-tuned block of the loaded base."""
        try:
            model.select_finetune_block(cfg.model.finetune)
        except ValueError as e:
            raise ConfigError(f"model.finetune: {e}") from e

    def set_train_modes(self, model: SegmentationModel, reference_bn: bool, frozen_bn: bool) -> None:
        """Trunk in eval mode, the fine-tuned block in train mode (its BatchNorm in eval mode with
        ``frozen_bn``); everything in train mode with ``reference_bn``."""
        if reference_bn:
            model.train()
            return
        model.eval()
        model.final.train()
        if frozen_bn:
            for m in model.final.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def teacher(self, model: SegmentationModel, cfg: TrainConfig) -> nn.Module | None:
        """A frozen copy of the base's block for the distillation term (None without it)."""
        if cfg.loss.distill_weight > 0:
            return copy.deepcopy(model.final).eval().requires_grad_(False)
        return None

    def trainable(self, model: SegmentationModel) -> list[nn.Parameter]:
        """Freeze everything else; the parameters to optimise."""
        return freeze_for_finetuning(model)

    def trained_module(self, model: SegmentationModel) -> nn.Module:
        return model.final

    def replace_trained(self, model: SegmentationModel, module: nn.Module) -> SegmentationModel:
        """``model`` with its trained module replaced (SyncBatchNorm conversion)."""
        model.final = module
        return model

    def parameters(self, model: SegmentationModel) -> list[nn.Parameter]:
        return list(model.finetune_parameters())

    def stage_parameters(self, model: SegmentationModel) -> list[nn.Parameter]:
        """The encoder stage being fine-tuned (learns at ``optim.stage_lr_scale``), if any."""
        return list(model.stage_parameters())

    def objective(self, cfg: LossConfig) -> PebalLoss:
        return PebalLoss(cfg)

    def loss(
        self,
        model: SegmentationModel,
        trained: nn.Module,
        objective: PebalLoss,
        images: torch.Tensor,
        labels: torch.Tensor,
        teacher: nn.Module | None,
    ) -> tuple[torch.Tensor, Terms]:
        """``(total, terms by name)`` of one batch: ``images`` normalised ``B x 3 x H x W``,
        ``labels`` int64 ``B x H x W``."""
        logits, reference = finetune_logits(model, trained, images, teacher)
        return objective(logits, labels, reference)

    def validates(self, cfg: TrainConfig) -> bool:
        """Whether to measure validation mIoU after every epoch."""
        return False


class PretrainMode:
    """``pretrain``: the whole network with 19-class cross-entropy (see the module docstring)."""

    num_classes = NUM_CLASSES
    needs_base = False

    def outliers(self, d: TrainDataConfig) -> str:
        return "none"

    def prepare(self, model: SegmentationModel, cfg: TrainConfig) -> None:
        return None

    def set_train_modes(self, model: SegmentationModel, reference_bn: bool, frozen_bn: bool) -> None:
        model.train()

    def teacher(self, model: SegmentationModel, cfg: TrainConfig) -> nn.Module | None:
        return None

    def trainable(self, model: SegmentationModel) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def trained_module(self, model: SegmentationModel) -> nn.Module:
        return model

    def replace_trained(self, model: SegmentationModel, module: nn.Module) -> SegmentationModel:
        return module

    def parameters(self, model: SegmentationModel) -> list[nn.Parameter]:
        return list(model.parameters())

    def stage_parameters(self, model: SegmentationModel) -> list[nn.Parameter]:
        return []

    def objective(self, cfg: LossConfig) -> TermSum:
        return TermSum(((None, InlierCrossEntropy()),))

    def loss(
        self,
        model: SegmentationModel,
        trained: nn.Module,
        objective: TermSum,
        images: torch.Tensor,
        labels: torch.Tensor,
        teacher: nn.Module | None,
    ) -> tuple[torch.Tensor, Terms]:
        return objective(LossInputs(trained(images), labels))

    def validates(self, cfg: TrainConfig) -> bool:
        return bool(cfg.data.val_split)


TrainingMode = PebalMode | PretrainMode

TRAINING_MODES: Registry[TrainingMode] = Registry("training mode")
"""``TrainConfig.mode`` -> its :class:`PebalMode` / :class:`PretrainMode`."""
TRAINING_MODES.register("pebal", PebalMode())
TRAINING_MODES.register("pretrain", PretrainMode())
