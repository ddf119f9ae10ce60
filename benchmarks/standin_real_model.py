"""Write the STAND-IN for the shipped real-camera model ``pebal_core/assets/real_espnet_pebal.safetensors``.

The real model is the pretrained Cityscapes ESPNet (p=2, q=8; sacmehta/ESPNet, MIT licence)
after PEBAL fine-tuning on real street images (``make real-model``). Until that file is committed
in its place, this script writes a stand-in with the same metadata keys, so that everything built
around the default model (named models, node, demo, pictures, tests) runs and reads what it
needs from the metadata:

* weights: the pretrained ESPNet unchanged (``training``: "stand-in: pretrained, not fine-tuned");
* ``input_size`` [512, 1024]: the network input the threshold was taken at;
* ``score_threshold``: the PEBAL score (free energy of the 19 inlier logits, 7x7 Gaussian smoothed)
  at 95 % true-positive rate over the anomaly pixels of Fishyscapes Static validation images
  0-14 of the ``Validation_Dataset`` bundle (a hold-out: Cityscapes validation frames with pasted
  objects; never one of the test sets), scored as ``Predictor.predict`` does at that input size;
* ``base_model``, ``training_data``, ``normalization``, ``arch``.

    python benchmarks/standin_real_model.py [--realdata ../shared/realdata] [--out pebal_core/assets/...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pebal_core.data.validation_dataset import ValidationDataset
from pebal_core.fileio import sha256_file
from pebal_core.labels import EVAL_VOID
from pebal_core.metrics import anomaly_metrics
from pebal_core.model_store import MODELS
from pebal_core.models.checkpoint import load_model, save_checkpoint
from pebal_core.runtime import Predictor

ROOT = Path(__file__).resolve().parents[1]
ESPNET = Path("models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors")
INPUT_SIZE = (512, 1024)
HOLDOUT = range(0, 15)
"""Fishyscapes Static validation images (``<N>`` of ``fs_static/images/<N>.jpg``) the threshold is taken on."""
BASE_MODEL = {
    "name": "ESPNet p=2 q=8 with decoder, Cityscapes (espnet_p_2_q_8.pth)",
    "source": "https://github.com/sacmehta/ESPNet commit afe71c38edaee3514ca44e0adcafdf36109bf437, "
    "pretrained/decoder/espnet_p_2_q_8.pth",
    "licence": "MIT",
}


def holdout_threshold(checkpoint: Path, realdata: Path) -> tuple[float, dict]:
    """The 95 %-TPR PEBAL score over the hold-out images, and where it came from."""
    predictor = Predictor.from_checkpoint(checkpoint, input_size=INPUT_SIZE)
    data = ValidationDataset(realdata / "Validation_Dataset", "fs_static", skip_without_anomaly=False)
    picked = [i for i, s in enumerate(data.samples) if int(s.image.stem) in HOLDOUT]
    scores, labels = [], []
    for i in tqdm(picked, desc="hold-out threshold", unit="image"):
        item = data[i]
        _, score = predictor.predict(item["image"])
        keep = item["label"] != EVAL_VOID
        scores.append(score[keep])
        labels.append(item["label"][keep])
    m = anomaly_metrics(np.concatenate(scores), np.concatenate(labels))
    t = m["threshold_tpr95"]
    source = {
        "dataset": "validation/fs_static",
        "dataset_options": {"images": f"{HOLDOUT.start}-{HOLDOUT.stop - 1}", "skip_without_anomaly": False},
        "n_images": len(picked),
        "input_size": list(INPUT_SIZE),
        "tpr": t["tpr"],
        "fpr": t["fpr"],
        "rule": "score >= threshold flags >= 95% of the anomalous pixels (highest such threshold)",
    }
    return float(t["score"]), source


def main() -> None:
    default_realdata = Path(os.environ.get("REALDATA", ROOT.parent / "shared" / "realdata"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--realdata", type=Path, default=default_realdata, help=f"(default {default_realdata})")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "pebal_core" / "assets" / MODELS["default"].resource, help="output file"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = args.realdata / ESPNET
    model = load_model(source, arch="espnet_p2q8")
    meta = {
        "training": "stand-in: pretrained, not fine-tuned (the base model's Cityscapes weights unchanged)",
        "training_data": "none here; the base model was trained on Cityscapes by its authors",
        "base_model": BASE_MODEL,
        "input_size": list(INPUT_SIZE),
        "converted_from": {"file": source.name, "format": "state_dict", "sha256": sha256_file(source)},
    }
    unthresholded = args.out.with_name(args.out.stem + ".unthresholded.safetensors")
    save_checkpoint(model, unthresholded, **meta)
    try:
        threshold, threshold_source = holdout_threshold(unthresholded, args.realdata)
    finally:
        unthresholded.unlink()
    save_checkpoint(model, args.out, score_threshold=threshold, score_threshold_source=threshold_source, **meta)
    tpr, fpr = threshold_source["tpr"], threshold_source["fpr"]
    print(f"wrote {args.out}: threshold {threshold:.4f} (TPR {tpr:.3f}, FPR {fpr:.3f} on the hold-out images)")


if __name__ == "__main__":
    main()
