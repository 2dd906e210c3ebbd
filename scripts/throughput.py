"""Turn a pytest-benchmark JSON of the benchmark suite into a results folder: `metrics.json`
(the throughput table's rows) and `run.json` (device, date, command, commit), which
`scripts/results.py` renders into docs/results.md.

    make bench                                   # writes .benchmarks/throughput.json
    python scripts/throughput.py .benchmarks/throughput.json --out docs/results/throughput \
        --machine "a 2-core CPU shared with other jobs" --command "make bench"
    make results

metrics.json: {"table": "throughput", "size": smoke|full, "cases": [...]}, a case per
benchmark with its name, group, variant, device, dtype, batch, shape, mean_s, stddev_s,
rounds, samples_per_s, and where present speedup_vs_eager_fp32 (the eager fp32 reference's
mean over this case's, from the pair of one group), flops and mfu. Only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TABLE = "throughput"
KEPT = ("variant", "device", "dtype", "batch", "shape", "samples_per_s", "flops", "mfu",
        "mfu_note", "unit", "n_critic", "method")  # fmt: skip


def cases_of(bench: dict, source: str = "the benchmark JSON") -> list[dict]:
    """The table's rows of a pytest-benchmark JSON, with each library case's speed-up over
    the eager fp32 reference of its group."""
    if not isinstance(bench.get("benchmarks"), list) or not bench["benchmarks"]:
        raise ValueError(f"{source}: no 'benchmarks' list (a pytest --benchmark-json file?)")
    cases = []
    for b in bench["benchmarks"]:
        info, stats = b.get("extra_info", {}), b["stats"]
        if "samples_per_s" not in info:
            raise ValueError(
                f"{source}: benchmark {b['name']!r} has no extra_info samples_per_s (not a "
                "case of benchmarks/, or written by an older suite)"
            )
        case = {"name": b["name"].removeprefix("test_"), "group": b.get("group")}
        case |= {k: info[k] for k in KEPT if info.get(k) is not None}
        case |= {"mean_s": stats["mean"], "stddev_s": stats["stddev"], "rounds": stats["rounds"]}
        cases.append(case)
    reference = {
        c["group"]: c["mean_s"] for c in cases if c.get("variant") == "eager-fp32" and c["group"]
    }
    for c in cases:
        if c.get("variant") == "library" and c["group"] in reference:
            c["speedup_vs_eager_fp32"] = reference[c["group"]] / c["mean_s"]
    return cases


def size_of(bench: dict) -> str:
    """The suite's size (smoke or full), "mixed" when the JSON holds both."""
    sizes = {b.get("extra_info", {}).get("size") for b in bench["benchmarks"]} - {None}
    return sizes.pop() if len(sizes) == 1 else "mixed"


def run_of(bench: dict, cases: list[dict], args) -> dict:
    """run.json: how the numbers were made."""
    commit = bench.get("commit_info", {})
    devices = sorted({c["device"] for c in cases if "device" in c})
    size = size_of(bench)
    run = {
        "title": f"Throughput: the benchmark suite at {size} size",
        "command": args.command,
        "device": ", ".join(devices),
        "date": bench.get("datetime", "")[:10],
    }
    if commit.get("id"):
        run["commit"] = commit["id"][:7] + ("-dirty" if commit.get("dirty") else "")
    if args.machine:
        run["machine"] = args.machine
    if args.environment:
        run["environment"] = args.environment
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest --benchmark-json output")
    parser.add_argument("--out", type=Path, default=Path("docs/results/throughput"))
    parser.add_argument("--command", default="pytest benchmarks --benchmark-only",
                        help="the command that made the JSON (run.json)")  # fmt: skip
    parser.add_argument("--machine", default=None, help="the machine, in words (run.json)")
    parser.add_argument(
        "--environment",
        default=" ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
        or None,
        help="environment settings that matter (default: OMP_NUM_THREADS where set)",
    )
    args = parser.parse_args(argv)
    try:
        bench = json.loads(args.json.read_text())
        cases = cases_of(bench, str(args.json))
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = {"table": TABLE, "size": size_of(bench), "cases": cases}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (("metrics.json", metrics), ("run.json", run_of(bench, cases, args))):
        path = args.out / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a file
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
