"""Side-by-side figures of distilled run folders made with ``edgetl distill --compare``, one row per run.

Reads each run's ``metrics.json`` and ``distill.yaml``: teacher, student without KD and student with KD on the
run's test split, the KD student's best validation accuracy, and the knobs that differ between runs (student
init, text augmentation, temperature, alpha, hidden weight, epochs). Prints a Markdown table and writes JSON.

    python benchmarks/distill_text_summary.py runs/rt_s3e2_s0 runs/rt_s3e2_s1 \\
        --json benchmarks/results/distill_text_3epoch_teachers.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from edgetl.fsutil import read_json, write_json


def row(run: Path) -> dict:
    metrics = read_json(run / "metrics.json")
    config = yaml.safe_load((run / "distill.yaml").read_text())
    compared = metrics["distill"]["comparison"]
    distill, train, data = config["distill"], config["train"], config["data"]
    teacher, no_kd, kd = (compared[k]["accuracy"] for k in ("teacher", "student_no_kd", "student_kd"))
    return {"run": str(run), "teacher": distill["teacher"], "seed": train["seed"], "epochs": train["epochs"],
            "student_init": distill.get("student_init", "teacher"), "text_augment": data.get("text_augment", 0.0),
            "temperature": distill["temperature"], "alpha": distill["alpha"], "hidden_weight": distill["hidden_weight"],
            "test_n": compared["teacher"]["n"], "teacher_test": teacher, "no_kd_test": no_kd, "kd_test": kd,
            "kd_minus_no_kd_points": round(100 * (kd - no_kd), 2), "kd_retention": round(kd / teacher, 4),
            "kd_val": metrics["val_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    rows = [row(run) for run in args.runs]
    print("| run | init | augment | teacher | no KD | KD | KD - no KD | KD / teacher | KD val |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['student_init']} | {r['text_augment']} | {r['teacher_test']:.2%} | "
              f"{r['no_kd_test']:.2%} | {r['kd_test']:.2%} | {r['kd_minus_no_kd_points']:+.2f} | "
              f"{r['kd_retention']:.1%} | {r['kd_val']:.2%} |")
    write_json(args.json, {"benchmark": "distill_text_summary", "rows": rows})


if __name__ == "__main__":
    main()
