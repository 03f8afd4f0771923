"""Peak RSS of `tlserve train` (issue 10): 4,000 vs 1,000 images at 128 px, each a fresh process on a cold store.

The peak is the child's own `ru_maxrss` (os.wait4), so nothing of this script's memory is counted. Optionally
the same for the code at another ref (`--before-ref`, exported with `git archive`), for comparison.

    .venv/bin/python bench/train_rss_bench.py [--counts 1000 4000] [--image-size 128] [--before-ref REF] [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench")]

from feature_store_bench import export_ref  # noqa: E402  (the same `git archive` export of the "before" code)

CLASSES = 2


def peak_rss(code: Path, work: Path, data: Path, size: int, label: str) -> dict[str, Any]:
    """Run `tlserve train` with the code at `code` in a child process; its peak RSS (MiB) and wall time."""
    command = [
        sys.executable, "-m", "tlserve", "train", str(data), "--name", "rss", "--weights", "none",
        "--image-size", str(size), "--epochs", "2", "--batch-size", "32", "--json",
        "--models-dir", str(work / f"models-{label}"), "--runs-dir", str(work / f"runs-{label}"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(code))
    load_before, started = os.getloadavg()[0], time.perf_counter()
    with open(work / f"{label}.out", "wb") as out, open(work / f"{label}.err", "wb") as err:
        child = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed: {(work / f'{label}.err').read_text()[-2000:]}")
    output = json.loads((work / f"{label}.out").read_text())
    return {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "seconds": round(time.perf_counter() - started, 1),
        "features": output.get("features"),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    from training.data.sample import SampleSpec, write_sample

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--before-ref", default="")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"image_size": args.image_size, "classes": CLASSES}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        codes = {"after": REPO_ROOT}
        if args.before_ref:
            codes["before"] = export_ref(args.before_ref, work / "before")
        for count in args.counts:
            data = work / f"data-{count}"
            write_sample(data, SampleSpec(classes=CLASSES, per_class=count // CLASSES, size=args.image_size, seed=0))
            for label, code in codes.items():
                results[f"{label}_{count}"] = peak_rss(code, work, data, args.image_size, f"{label}-{count}")
                print(json.dumps({f"{label}_{count}": results[f"{label}_{count}"]}), flush=True)
        for label in codes:
            low, high = (results[f"{label}_{count}"]["peak_rss_mib"] for count in (min(args.counts), max(args.counts)))
            results[f"{label}_ratio"] = round(high / low, 3)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
