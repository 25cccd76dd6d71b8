"""The numbers of scripts/gpu_check.sh's timed runs, from the files it leaves in its work folder:
NAME.wall (seconds), NAME.mem (nvidia-smi's used MiB, one a line), NAME.log (ns-train's output:
Nerfstudio's profiler prints the mean Trainer.train_iteration), NAME-export.log (tinysplat-export's
summary: Gaussians and step), NAME-eval.json (ns-eval's). Writes them to OUT.json and prints a table.

    python benchmarks/gpu_train_report.py WORK OUT.json
"""

import json
import re
import sys
from pathlib import Path


def number(pattern, text):
    found = re.findall(pattern, text)
    return float(found[-1].replace(",", "")) if found else None


def run_numbers(work: Path, name: str) -> dict:
    mem = [int(line) for line in (work / f"{name}.mem").read_text().split() if line.isdigit()]
    export = (work / f"{name}-export.log").read_text()
    scores = {}
    if (work / f"{name}-eval.json").exists():
        scores = json.loads((work / f"{name}-eval.json").read_text())["results"]
    return {
        "wall_s": round(float((work / f"{name}.wall").read_text()), 1),
        "step_s": number(r"Trainer\.train_iteration: ([\d.]+)", (work / f"{name}.log").read_text()),
        "steps": None if (s := number(r"step ([\d,]+)\)", export)) is None else int(s) + 1,
        "peak_gpu_mib": max(mem, default=None),
        "gaussians": None if (g := number(r"Wrote ([\d,]+) of", export)) is None else int(g),
        "psnr": scores.get("psnr"),
        "ssim": scores.get("ssim"),
    }


def main(work: Path, out: Path) -> None:
    names = sorted(p.stem for p in work.glob("*.wall"))
    report = {name: run_numbers(work, name) for name in names}
    out.write_text(json.dumps(report, indent=2))
    columns = ["wall_s", "step_s", "steps", "peak_gpu_mib", "gaussians", "psnr", "ssim"]
    print("| run | " + " | ".join(columns) + " |")
    for name, numbers in report.items():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (numbers[c] for c in columns)]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
