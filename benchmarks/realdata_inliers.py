"""The real Cityscapes frames of the ``realdata`` bundle as a Cityscapes-layout training tree.

Used by ``benchmarks/real_data_pebal.py`` (a benchmark helper, not part of the ``pebal_core``
package). PEBAL fine-tunes on inlier road scenes with AnomalyMix outliers pasted in. The real
Cityscapes training set is not available here; the ``realdata`` folder (described in
``docs/evaluation_protocols.md``) holds a few real Cityscapes **val** frames that may serve as
inliers:

* ``Validation_Dataset/fs_static``: 30 Cityscapes val frames (2048x1024) with objects pasted in
  by Fishyscapes, labels 0 = inlier, 1 = pasted object, 255 = Cityscapes void. Four base frames
  occur twice with different objects (:data:`FS_STATIC_SAME_FRAME`). Ten images with pasted
  objects are held out (:data:`FS_STATIC_HOLDOUT`) as a validation set with their real object
  labels; the other twenty are training inliers with the pasted objects **and** the void made
  void (255) in the targets.
* ``cityscapes_frames/fullres_unlabeled``: two full-resolution frames without labels.
  ``frankfurt_000000_000294`` is also the one frame with ground truth (256x128, in
  ``mmseg_pseudo_256x128``); it is held out to measure inlier mIoU before and after fine-tuning
  (:func:`labelled_frame_miou`), so only ``frankfurt_000000_000576`` is a training frame.

None of these frames has Cityscapes semantic labels at training resolution, so the inlier
targets are **pseudo-labels: the pretrained model's own predictions** (:func:`pseudo_labels`):
the argmax over the 19 inlier channels, and void (255) where the model's 20-way argmax is its
void channel 19 (what Cityscapes' void, on which the real ENet's channel 19 was trained, would
label void).

Resolution: the real ENet was trained at 1024x512, so every frame is resized to
:data:`TREE_SIZE` = (512, 1024) with PIL bilinear (the ``course`` resize protocol of
:mod:`pebal_core.protocols`) and the
pseudo-labels are the model's predictions on exactly the stored image. A target pixel is void
when any source pixel under it (2x2 at half resolution) is a pasted object or void.

Tree written by :func:`build_inlier_tree` (``out`` must not exist; built in ``out.partial``
and renamed when complete)::

    out/cityscapes/leftImg8bit/train/<city>/<city>_000000_<frame:06d>_leftImg8bit.png
    out/cityscapes/gtFine/train/<city>/<city>_000000_<frame:06d>_gtFine_labelTrainIds.png
        city fsstatic (frame = the fs_static index N) and frankfurt (frame 576)
    out/validation/fs_static_holdout/{images/<N>.jpg, labels_masks/<N>.png}   byte copies
    out/manifest.json   source file, target kind and void share of every frame; the model

``out/cityscapes`` is what ``pebal train`` reads (``data.cityscapes``), and
``validation/fs_static_holdout`` is a ``Validation_Dataset``-layout set for ``pebal eval
--dataset validation/fs_static_holdout --root out/validation``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pebal_core.fileio import sha256_file
from pebal_core.images import read_label, read_rgb, write_label, write_rgb
from pebal_core.labels import ABSTENTION_CHANNEL, NUM_CLASSES, VOID_ID
from pebal_core.metrics import confusion_matrix, mean_iou
from pebal_core.models.base import SegmentationModel
from pebal_core.protocols import resize_image, resize_labels
from pebal_core.runtime import Predictor

ENET_CHECKPOINT = "models/enet_cityscapes_void_yurnero14/model_best.pth"
"""The real Cityscapes ENet (20 channels, channel 19 = void), relative to the realdata folder."""
FS_STATIC = "Validation_Dataset/fs_static"
FULLRES_FRAMES = "cityscapes_frames/fullres_unlabeled"
LABELLED_FRAME = "frankfurt_000000_000294"
LABELLED_GT = f"cityscapes_frames/mmseg_pseudo_256x128/{LABELLED_FRAME}_gtFine_labelTrainIds.png"
TRAIN_FRAMES = ("frankfurt_000000_000576",)
"""Full-resolution unlabelled frames used for training (``frankfurt_000000_000294`` is held out)."""

FS_STATIC_HOLDOUT = (0, 4, 6, 7, 8, 9, 10, 13, 15, 21)
"""fs_static images held out for validation: the first ten (by index) that contain pasted objects
and whose Cityscapes base frame occurs only once in fs_static."""
FS_STATIC_SAME_FRAME = ((1, 16), (5, 18), (12, 23), (14, 28))
"""fs_static images showing the same Cityscapes frame (mean absolute difference at 256x128 below
2 grey levels; every other pair differs by more than 24): never split across train and holdout."""
FS_STATIC_CITY = "fsstatic"
TREE_SIZE = (512, 1024)
"""(height, width) of the tree's images: the real ENet's training resolution."""
HOLDOUT_SET = "fs_static_holdout"


def void_at(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool ``H x W`` at ``size``: True where any source pixel under the target pixel is non-zero
    (a pasted object 1 or void 255 in a 0/1/255 anomaly label map)."""
    bad = (label != 0).astype(np.float32)
    if bad.shape == tuple(size):
        return bad > 0
    return cv2.resize(bad, (size[1], size[0]), interpolation=cv2.INTER_AREA) > 0


@torch.inference_mode()
def pseudo_labels(model: SegmentationModel, rgb: np.ndarray, channel19: int = VOID_ID) -> np.ndarray:
    """The model's own segmentation of ``rgb`` (uint8 ``H x W x 3``, run at its native size) as
    trainIds: argmax over the 19 inlier channels (lowest index wins ties), and ``channel19``
    (``VOID_ID``, or ``UNCLASSED_ID`` for frames of normal scenes: the bonnet, which the
    Cityscapes networks' channel 19 was trained on, is an inlier without a class) where the argmax
    over all channels is the void/abstention channel 19 (20-channel models)."""
    logits = Predictor.from_model(model).logits(rgb)[0]
    labels = logits[:NUM_CLASSES].argmax(0).to(torch.uint8)
    if logits.shape[0] > ABSTENTION_CHANNEL:
        labels[logits.argmax(0) == ABSTENTION_CHANNEL] = channel19
    return labels.cpu().numpy()


def fs_static_indices(realdata: str | os.PathLike) -> list[int]:
    """Indices ``N`` of the fs_static images present (``images/<N>.jpg``), sorted."""
    images = Path(realdata) / FS_STATIC / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"{images} not found: expected the realdata folder (docs/evaluation_protocols.md)")
    return sorted(int(p.stem) for p in images.glob("*.jpg"))


def build_inlier_tree(
    realdata: str | os.PathLike,
    out: str | os.PathLike,
    model: SegmentationModel,
    size: tuple[int, int] = TREE_SIZE,
    holdout: tuple[int, ...] = FS_STATIC_HOLDOUT,
    model_file: str | os.PathLike | None = None,
    progress: bool = True,
    channel19: int = VOID_ID,
) -> dict:
    """Write the training tree described in the module docstring; returns its manifest.

    Args:
        realdata: the realdata folder.
        out: the tree's root; must not exist (it is built in ``<out>.partial`` and renamed).
        model: the pretrained model whose predictions are the pseudo-labels (eval mode is set).
        size: (H, W) of the stored images and labels.
        holdout: fs_static indices kept out of training and copied to the validation set.
        model_file: the checkpoint ``model`` was loaded from (recorded with its sha256).
        channel19: the target where the model's 20-way argmax is its channel 19 (:func:`pseudo_labels`).
    """
    realdata, out = Path(realdata), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another output directory")
    indices = fs_static_indices(realdata)
    same_frame = {i: group for group in FS_STATIC_SAME_FRAME for i in group}
    split = [i for i in holdout if not set(same_frame.get(i, (i,))) <= set(holdout)]
    if split:
        raise ValueError(f"fs_static images {split} show the same frame as a training image ({FS_STATIC_SAME_FRAME})")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.eval()
    fs = realdata / FS_STATIC
    jobs = [
        (
            f"{FS_STATIC_CITY}/{FS_STATIC_CITY}_000000_{i:06d}",
            fs / "images" / f"{i}.jpg",
            fs / "labels_masks" / f"{i}.png",
        )
        for i in indices
        if i not in holdout
    ]
    jobs += [
        (f"frankfurt/{name}", realdata / FULLRES_FRAMES / f"{name}_leftImg8bit.png", None) for name in TRAIN_FRAMES
    ]
    frames = []
    for name, image_file, mask_file in tqdm(jobs, desc="pseudo-labelling", unit="img", disable=not progress):
        rgb = resize_image(read_rgb(image_file), size, "course")
        labels = pseudo_labels(model, rgb, channel19)
        model_void = float((labels == channel19).mean())
        if mask_file is not None:
            labels[void_at(read_label(mask_file), size)] = VOID_ID
        city, stem = name.split("/")
        for kind in ("leftImg8bit", "gtFine"):
            (partial / "cityscapes" / kind / "train" / city).mkdir(parents=True, exist_ok=True)
        write_rgb(partial / "cityscapes" / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", rgb)
        write_label(partial / "cityscapes" / "gtFine" / "train" / city / f"{stem}_gtFine_labelTrainIds.png", labels)
        frames.append(
            {
                "name": name,
                "image": str(image_file.relative_to(realdata)),
                "void_from": None if mask_file is None else str(mask_file.relative_to(realdata)),
                "targets": "pseudo-labels (model argmax)",
                "void_share": float((labels == VOID_ID).mean()),
                "model_void_share": model_void,
            }
        )
    val = partial / "validation" / HOLDOUT_SET
    for sub, suffix in (("images", ".jpg"), ("labels_masks", ".png")):
        (val / sub).mkdir(parents=True)
        for i in holdout:
            shutil.copyfile(fs / sub / f"{i}{suffix}", val / sub / f"{i}{suffix}")
    manifest = {
        "size": list(size),
        "model_file": None if model_file is None else str(model_file),
        "model_sha256": None if model_file is None else sha256_file(model_file),
        "pseudo_labels": f"argmax over the 19 inlier channels; {channel19} where the 20-way argmax is channel 19",
        "train": frames,
        "holdout": {"set": HOLDOUT_SET, "fs_static_indices": list(holdout)},
        "held_out_labelled_frame": LABELLED_FRAME,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    partial.rename(out)
    return manifest


def labelled_frame_miou(model: SegmentationModel, realdata: str | os.PathLike) -> dict[str, float]:
    """Inlier segmentation quality on the one labelled real frame (docs/evaluation_protocols.md).

    ``frankfurt_000000_000294`` at full resolution, PIL bilinear to 1024x512, the model's own
    normalisation, the prediction subsampled to the 256x128 ground truth with PIL's nearest rule
    (pixel ``4i+2``). Returns, in %: ``miou_20`` and ``acc_20`` for the 20-way argmax (a void /
    abstention prediction counts as wrong; 62.5 % published for the real ENet) and ``miou_19``
    and ``acc_19`` for the 19-way inlier argmax (what the Predictor outputs); mIoU averaged over
    the classes present in the ground truth (``mean_iou(average_over="gt")``).
    """
    realdata = Path(realdata)
    rgb = read_rgb(realdata / FULLRES_FRAMES / f"{LABELLED_FRAME}_leftImg8bit.png")
    gt = read_label(realdata / LABELLED_GT)
    logits = Predictor.from_model(model, TREE_SIZE, "course").logits(rgb)[0]
    out = {}
    for tag, channels in (("20", logits.shape[0]), ("19", NUM_CLASSES)):
        pred = logits[:channels].argmax(0).to(torch.uint8).cpu().numpy()
        pred = resize_labels(pred, gt.shape)
        conf = confusion_matrix(pred, gt, num_classes=channels)
        out[f"miou_{tag}"] = 100 * mean_iou(conf, average_over="gt")[0]
        out[f"acc_{tag}"] = 100 * float(np.trace(conf) / conf.sum())
    return out
