"""Feature-store benchmark (issue 10): an 8-configuration sweep before (the branch point with main, exported by
`git archive`, or --before PATH) vs after, and phase 1 of a retrain after adding 5 % new files vs a cold run on the
same data. One run, paired, load average beside each number.

    .venv/bin/python bench/feature_store_bench.py [--before-ref REF | --before PATH] [--per-class 500] [--out x.json]
        [--retrain 500x64,2000x64,500x224 --repeats 3]   # retrain cases: images per class x image size

The retrain ratio depends on the dataset: a warm phase 1 still pays fixed costs (Keras traces the head's train
step, the base's predict function for the new images) that a cold one amortizes over every image's base pass,
so the benchmark measures it at several sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SWEEP_TOML = """
weights = "none"
image_size = {size}
batch_size = 32
epochs = 2
seed = 0
runs_dir = "{runs}"

[sweep]
learning_rate = [0.001, 0.0003]
dense_units = [16, 64]
dropout = [0.0, 0.2]
"""


def load() -> float:
    return os.getloadavg()[0]


def timed_sweep(code: Path, work: Path, data: Path, size: int, label: str) -> dict[str, Any]:
    """`tlserve sweep` of 8 configurations with the code at `code`, in a subprocess; wall time end to end."""
    runs = work / f"runs-{label}"
    config = work / f"sweep-{label}.toml"
    config.write_text(SWEEP_TOML.format(size=size, runs=runs), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(code))
    command = [sys.executable, "-m", "tlserve", "sweep", str(config), "--data", str(data), "--name", "s", "--json"]
    load_before, started = load(), time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return {"seconds": time.perf_counter() - started, "load_before": load_before, "load_after": load()}


def timed_phase1(data: Path, store: Path, runs: Path, size: int) -> dict[str, Any]:
    """One `train` in-process with phase 1 timed; returns its seconds and feature counts."""
    import training.phases as phases
    from training.config import build_run
    from training.train import train

    original = phases.fit_head_on_features
    seconds: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = original(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return result

    phases.fit_head_on_features = timed  # type: ignore[assignment]
    try:
        config, run = build_run({}, dict(
            data=str(data), name="r", weights="none", image_size=size, batch_size=32, epochs=2,
            runs_dir=str(runs), feature_store=str(store),
        ))  # fmt: skip
        load_before = load()
        result = train(config, run, progress=False)
    finally:
        phases.fit_head_on_features = original  # type: ignore[assignment]
    return {"phase1_s": seconds[0], "features": result.features, "load_before": load_before, "load_after": load()}


def retrain_case(work: Path, per_class: int, size: int, repeats: int = 1) -> dict[str, Any]:
    """Old = 95 % of the files, then the grown folder (the other 5 % added): phase 1 warm vs cold.

    Each repeat pairs a warm run (on a fresh copy of the old store) with a cold run (empty store), alternating
    which goes first; the case's ratio is the median of the per-repeat ratios.
    """
    import statistics

    from training.data.sample import SampleSpec, write_sample

    case = work / f"retrain-{per_class}x{size}"
    data = case / "data"
    write_sample(data, SampleSpec(classes=2, per_class=per_class, size=96, seed=0))
    old = case / "old"
    shutil.copytree(data, old)
    for path in sorted(old.glob("*/*.*"))[::20]:
        path.unlink()
    timed_phase1(old, case / "store-old", case / "runs-old", size)
    pairs = []
    for repeat in range(repeats):
        shutil.copytree(case / "store-old", case / f"store-{repeat}")
        stores = {"warm": case / f"store-{repeat}", "cold": case / f"store-cold-{repeat}"}
        order = ("warm", "cold") if repeat % 2 == 0 else ("cold", "warm")
        pair = {kind: timed_phase1(data, stores[kind], case / f"runs-{kind}-{repeat}", size) for kind in order}
        pair["phase1_speedup"] = pair["cold"]["phase1_s"] / pair["warm"]["phase1_s"]
        pairs.append(pair)
    result: dict[str, Any] = {"per_class": per_class, "image_size": size, "warm": pairs[0]["warm"]}
    result.update(cold=pairs[0]["cold"], repeats=pairs)
    result["phase1_speedup"] = statistics.median(pair["phase1_speedup"] for pair in pairs)
    print(json.dumps({key: value for key, value in result.items() if key != "repeats"} | {
        "ratios": [round(pair["phase1_speedup"], 2) for pair in pairs]}), flush=True)  # fmt: skip
    return result


def retrain_cases(text: str) -> list[tuple[int, int]]:
    """ "500x64,500x224" → [(500, 64), (500, 224)]."""
    cases = []
    for item in text.split(","):
        per_class, _, size = item.strip().partition("x")
        cases.append((int(per_class), int(size)))
    return cases


def merge_base() -> str:
    command = ["git", "-C", str(REPO_ROOT), "merge-base", "main", "HEAD"]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def export_ref(ref: str, target: Path) -> Path:
    """The tree of `ref` as plain files (no worktree, nothing of the repository touched)."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", ref], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    from training.data.sample import SampleSpec, write_sample

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--before-ref", default="", help="git ref to compare with (default: merge-base with main)")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="warm/cold pairs per retrain case (median ratio)")
    parser.add_argument("--retrain", type=retrain_cases, help="retrain cases PER_CLASSxSIZE,... (default: the sweep's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"per_class": args.per_class, "classes": 2, "image_size": args.image_size}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        before = args.before or export_ref(args.before_ref or merge_base(), work / "before")
        results["before"] = str(args.before or args.before_ref or merge_base())
        data = work / "data"
        write_sample(data, SampleSpec(classes=2, per_class=args.per_class, size=96, seed=0))
        if not args.skip_sweep:
            results["sweep_before"] = timed_sweep(before, work, data, args.image_size, "before")
            results["sweep_after"] = timed_sweep(REPO_ROOT, work, data, args.image_size, "after")
            results["sweep_speedup"] = results["sweep_before"]["seconds"] / results["sweep_after"]["seconds"]
            print(json.dumps(results, indent=2), flush=True)
        cases = args.retrain or [(args.per_class, args.image_size)]
        results["retrain"] = [retrain_case(work, per_class, size, args.repeats) for per_class, size in cases]
        first = results["retrain"][0]
        results["retrain_warm"], results["retrain_cold"] = first["warm"], first["cold"]
        results["retrain_phase1_speedup"] = first["phase1_speedup"]
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
