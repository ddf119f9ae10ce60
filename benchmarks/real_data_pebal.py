"""Tables of the real-data PEBAL models for ``docs/real_data_results.md``.

Reads what ``benchmarks/real_model.py`` wrote under ``--out/<arch>[/<run>]/`` (``selection.json``,
``chosen.json``, ``energy_stats.json``, ``test.json``, ``evidence.json``) for every base network
that has been through its ``test`` stage, and rewrites its part of the section between the
``real_data_pebal`` markers of ``--doc`` (the parts of base networks without such a run stay as
they are): the hold-out selection, the test sets at 512x1024 and native where measured (course
protocol, AP / FPR95 of the fine-tuned model's PEBAL score against the best score of any pretrained
base network measured), CamVid test mIoU before and after, and per-image numbers for the sets that
are not won.

    .venv/bin/python benchmarks/real_data_pebal.py --out runs/real_model --doc docs/real_data_results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pebal_core.evaluate import METHOD_NAMES
from pebal_core.fileio import replace_between_markers

BEGIN, END = "<!-- real_data_pebal:begin -->", "<!-- real_data_pebal:end -->"
SET_TITLES = {
    "RoadAnomaly21": "RoadAnomaly21",
    "RoadObsticle21": "RoadObstacle21",
    "FS_LostFound_full": "FS L&F (30/100)",
    "RoadAnomaly": "Road Anomaly",
}
BASELINES = ("msp", "maxlogit", "entropy", "energy", "pebal", "abstention")
ARCH_TITLES = {"espnet_p2q8": "ESPNet (p=2, q=8)", "enet": "ENet"}
ERFNET_MAXLOGIT_512 = {
    "RoadAnomaly21": (38.26, 59.40),
    "RoadObsticle21": (4.63, 48.43),
    "FS_LostFound_full": (3.30, 45.49),
}
"""Published ERFNet MaxLogit at 512x1024, AP / FPR95 in % (yurnero14/Anomaly-Segmentation eval/results.txt,
all 100 FS L&F images where the rows here use 30 of them)."""


ENERGY_PARTS = {"inlier": "inlier pixels", "mixed": "pixels pasted anywhere", "road": "pixels pasted onto the road"}


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def best(methods: dict, key: str) -> tuple[str, float]:
    """The best baseline score of the pretrained network for ``key`` (ap: highest, fpr95: lowest)."""
    items = [(m, methods[m][key]) for m in BASELINES if m in methods]
    name, value = (max if key == "ap" else min)(items, key=lambda kv: kv[1])
    return name, value


def label(method: str) -> str:
    return "smoothed energy" if method == "pebal" else METHOD_NAMES[method]


def selection_section(arch: str, run: Path) -> list[str]:
    chosen = json.loads((run / "chosen.json").read_text())
    rows = chosen["rows"]
    road = all("road_holdout" in r for r in rows.values())
    head = "| candidate | fs_static hold-out AP | FPR95 |" + (" road hold-out AP | FPR95 |" if road else "")
    lines = [
        f"Rule: {chosen['rule']}.",
        "",
        head + " CamVid val mIoU (9 classes) |",
        "|---|---:|---:|" + ("---:|---:|" if road else "") + "---:|",
    ]
    for name, r in rows.items():
        mark = " **(chosen)**" if name == chosen["chosen"] else ""
        fs = r["fs_static_holdout"]["pebal"]
        cells = f"{pct(fs['ap'])} | {pct(fs['fpr95'])} |"
        if road:
            rd = r["road_holdout"]["pebal"]
            cells += f" {pct(rd['ap'])} | {pct(rd['fpr95'])} |"
        title = "pretrained (smoothed energy)" if name == "base" else f"{name.replace('step_', 'step ')}{mark}"
        lines.append(f"| {title} | {cells} {pct(r['camvid_val']['miou'])} |")
    return lines


def zoo_best(test: dict, res: str, s: str, key: str) -> tuple[str, str, float]:
    """The best baseline over every pretrained base network measured at ``res`` on set ``s``:
    ``(base, score, value)`` (ap: highest, fpr95: lowest)."""
    found = []
    for k, v in test.items():
        parts = k.split("/")
        if k == f"base/{res}/{s}":
            found.append(("this base", *best(v["methods"], key)))
        elif parts[0] == "zoo" and parts[2:] == [res, s]:
            found.append((parts[1], *best(v["methods"], key)))
    return (max if key == "ap" else min)(found, key=lambda t: t[2])


def test_section(test: dict, res: str) -> tuple[list[str], list[str]]:
    """(summary table, not-won set names) at resolution ``res``: the fine-tuned PEBAL score against
    the best baseline of any pretrained base network of the zoo measured there."""
    lines = [
        "| set | PEBAL AP | best pretrained AP (base, score) | PEBAL FPR95 | best pretrained FPR95 (base, score) "
        "| won |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lost = []
    for s, title in SET_TITLES.items():
        if f"pebal/{res}/{s}" not in test or f"base/{res}/{s}" not in test:
            continue
        ours = test[f"pebal/{res}/{s}"]["methods"]["pebal"]
        (ab, an, av), (fb, fn, fv) = zoo_best(test, res, s, "ap"), zoo_best(test, res, s, "fpr95")
        ap_won, fpr_won = ours["ap"] > av, ours["fpr95"] < fv
        won = "both" if ap_won and fpr_won else "AP only" if ap_won else "FPR95 only" if fpr_won else "**no**"
        if not (ap_won and fpr_won):
            lost.append(s)
        lines.append(
            f"| {title} | {pct(ours['ap'])} | {pct(av)} ({ab}, {label(an)}) | {pct(ours['fpr95'])} | "
            f"{pct(fv)} ({fb}, {label(fn)}) | {won} |"
        )
    return lines, lost


def full_table(test: dict, res: str, arch: str) -> list[str]:
    sets = [s for s in SET_TITLES if f"pebal/{res}/{s}" in test and f"base/{res}/{s}" in test]
    if not sets:
        return ["(not measured yet)"]
    lines = [
        "| model | score | " + " | ".join(SET_TITLES[s] for s in sets) + " |",
        "|---|---|" + "---:|" * len(sets),
    ]
    counts = [f"{test[f'pebal/{res}/{s}']['n_images']}" for s in sets]
    lines.append("| | images | " + " | ".join(counts) + " |")
    for who, title in (("base", f"pretrained {ARCH_TITLES[arch]}"), ("pebal", f"PEBAL {ARCH_TITLES[arch]}")):
        for m in BASELINES:
            if m not in test[f"{who}/{res}/{sets[0]}"]["methods"]:
                continue
            cells = []
            for s in sets:
                r = test[f"{who}/{res}/{s}"]["methods"][m]
                cells.append(f"{pct(r['ap'])} / {pct(r['fpr95'])} / {pct(r['auroc'])}")
            name = "PEBAL (smoothed energy)" if m == "pebal" else METHOD_NAMES[m]
            lines.append(f"| {title} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: AP / FPR95 (ood_metrics) / AUROC, in %."]
    return lines


def erfnet_table(test: dict) -> list[str]:
    """Stretch: the fine-tuned PEBAL score against the published ERFNet MaxLogit numbers (512x1024)."""
    lines = [
        "Stretch, against a stronger network: the published ERFNet MaxLogit numbers at 512x1024 (FS L&F "
        "published on all 100 images, here 30 of them: not the same images).",
        "",
        "| set | PEBAL AP / FPR95 | ERFNet MaxLogit AP / FPR95 | AP higher | FPR95 lower |",
        "|---|---:|---:|---|---|",
    ]
    for s, (ap, fpr) in ERFNET_MAXLOGIT_512.items():
        r = test.get(f"pebal/512x1024/{s}", {}).get("methods", {}).get("pebal")
        if r is None:
            continue
        yes = {True: "yes", False: "no"}
        lines.append(
            f"| {SET_TITLES[s]} | {pct(r['ap'])} / {pct(r['fpr95'])} | {ap:.2f} / {fpr:.2f} | "
            f"{yes[100 * r['ap'] > ap]} | {yes[100 * r['fpr95'] < fpr]} |"
        )
    return lines


def per_image_section(evidence: dict, s: str, arch: str) -> list[str]:
    if s not in evidence:
        return []
    e = evidence[s]
    bm = e["base_method"]
    lines = [
        f"Per-image AP at 512x1024, {SET_TITLES[s]}: the fine-tuned model's PEBAL score vs the pretrained "
        f"model's {label(bm)} (its best score by AP on this set).",
        "",
        "| image | anomaly px % | PEBAL AP | pretrained AP |",
        "|---|---:|---:|---:|",
    ]
    for r in e["rows"]:
        lines.append(f"| {r['name']} | {pct(r['prevalence'])} | {pct(r['pebal'])} | {pct(r['base'])} |")
    wins = sum(r["pebal"] > r["base"] for r in e["rows"])
    lines += ["", f"The fine-tuned PEBAL score has the higher AP on {wins} of {len(e['rows'])} images."]
    return lines


def arch_section(arch: str, run: Path) -> list[str]:
    test = json.loads((run / "test.json").read_text())
    lines = [f"### {ARCH_TITLES[arch]}", ""]
    stats = run / "energy_stats.json"
    if stats.is_file():
        e = json.loads(stats.read_text())
        q = "/".join(str(v) for v in e["quantiles"])
        parts = [f"{what} {e[k]}" for k, what in ENERGY_PARTS.items() if k in e]
        lines += [
            f"Energy of the pretrained network on {e['n_samples']} mixed training samples (quantiles {q} %): "
            + "; ".join(parts) + ".",
            "",
        ]
    lines += ["#### Selection on the hold-out data", "", *selection_section(arch, run), ""]
    all_lost = {}
    for res in ("512x1024", "native"):
        if not any(k.startswith(f"base/{res}/") for k in test):
            continue
        summary, lost = test_section(test, res)
        all_lost[res] = lost
        lines += [f"#### Test sets, {res} input (course protocol)", "", *summary, "", *full_table(test, res, arch), ""]
        if res == "512x1024":
            lines += [*erfnet_table(test), ""]
    if "pebal/camvid_test" in test:
        b, o = test["base/camvid_test"], test["pebal/camvid_test"]
        lines += [
            "#### Inlier cost: CamVid test (233 frames, native 480x360, 9 mapped classes)",
            "",
            "| model | mIoU | " + " | ".join(b["per_class"]) + " |",
            "|---|---:|" + "---:|" * len(b["per_class"]),
            "| pretrained | " + pct(b["miou"]) + " | " + " | ".join(pct(v) for v in b["per_class"].values()) + " |",
            "| PEBAL | " + pct(o["miou"]) + " | " + " | ".join(pct(v) for v in o["per_class"].values()) + " |",
            "",
        ]
    if "pebal/cityscapes8_pixel_accuracy" in test:
        b, o = test["base/cityscapes8_pixel_accuracy"], test["pebal/cityscapes8_pixel_accuracy"]
        lines += [
            "Pixel accuracy on the 8 Cityscapes gtFine frames (512x1024 input, trainId pixels): "
            f"pretrained {pct(b)} %, PEBAL {pct(o)} % ({100 * (o - b):+.2f} points; the frames are training "
            "inliers of the recipe).",
            "",
        ]
    evidence = json.loads((run / "evidence.json").read_text()) if (run / "evidence.json").is_file() else {}
    for s in all_lost.get("512x1024", []):
        lines += [*per_image_section(evidence, s, arch), ""]
    if evidence:
        lines += [
            f"![examples](real_evidence_{arch}.png)",
            "",
            f"`real_evidence_{arch}.png`: per set not won, the image where the fine-tuned PEBAL score trails the "
            "pretrained network's best score the most (512x1024).",
            "",
        ]
    return lines


def current_sections(doc: Path) -> dict[str, list[str]]:
    """The lines of each base network's section now between the markers of ``doc``, by ``arch``."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        return {}
    body = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n").split("\n")
    titles = {f"### {t}": arch for arch, t in ARCH_TITLES.items()}
    sections: dict[str, list[str]] = {}
    arch = None
    for line in body:
        arch = titles.get(line, arch)
        if arch is not None:
            sections.setdefault(arch, []).append(line)
    return sections


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/real_model"), help="benchmarks/real_model.py's --out")
    p.add_argument("--run", default="", help="benchmarks/real_model.py's --run (the run under <out>/<arch>/)")
    p.add_argument("--doc", type=Path, default=Path("docs/real_data_results.md"), help="document to update")
    args = p.parse_args(argv)
    kept = current_sections(args.doc)
    lines: list[str] = []
    found = False
    for arch in ARCH_TITLES:
        run = args.out / arch / args.run if args.run else args.out / arch
        if (run / "test.json").is_file() and (run / "chosen.json").is_file():
            lines += arch_section(arch, run)
            found = True
        elif arch in kept:  # no run of this base here: its section stays as it is
            lines += kept[arch]
    if not found:
        print(f"no finished run under {args.out} (run benchmarks/real_model.py first)", file=sys.stderr)
        return 1
    replace_between_markers(args.doc, BEGIN, END, lines)
    print(f"updated {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
