"""Whole-process wall time of one `gallery search PHOTO` (from the command to the answer), paired.

Each variant is a checkout of the code (put first on PYTHONPATH) and a gallery it can read; the runs
alternate A B A B ... so that load from other work hits every variant alike, and the median of each
is reported (wall time, and the CPU time each process used, which other work on the machine moves
far less), with `python -c "import torch"` alone in the same rotation as the floor no search can go
under:

    python benchmarks/search_startup.py --query PHOTO --runs 7 \\
        --variant before=/path/to/old/checkout,/tmp/gallery-old --variant after=.,/tmp/gallery-new

A gallery is opened (and migrated forward) by the code that reads it: give each variant its own copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one run of the command. The CPU time is what the
    process itself used: on a machine shared with other work it moves far less than the wall time."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)


def summary(values: list[float]) -> dict[str, object]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "all": [round(x, 3) for x in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--query", type=Path, required=True, help="The photo searched.")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=CODE_DIR,GALLERY",
                        help="A checkout and the gallery it searches (repeat; the first is A).")
    parser.add_argument("--runs", type=int, default=7, help="Runs of each variant (pairs).")
    parser.add_argument("--python", default=sys.executable, help="The interpreter (its venv's packages).")
    parser.add_argument("--output", type=Path, help="Write the figures as JSON too.")
    args = parser.parse_args()

    variants = []
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        code, _, gallery = rest.partition(",")
        variants.append((name, Path(code).resolve(), Path(gallery).resolve()))
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    query = args.query.resolve()
    # each run starts in its own checkout: `python -m` puts the working directory first on sys.path, so a
    # run started anywhere else could import another checkout's package than PYTHONPATH names
    commands = [(name, [args.python, "-m", "gallery.cli", "search", str(query), "--gallery", str(gallery)],
                 {**base_env, "PYTHONPATH": str(code)}, code) for name, code, gallery in variants]
    commands.append(("import torch alone", [args.python, "-c", "import torch"], base_env, Path("/")))
    for name, command, env, cwd in commands:  # warm the page cache: the first run of a cold venv reads ~GBs
        timed(command, env, cwd)
        if name != "import torch alone":  # the variant really runs its own checkout
            where = subprocess.run([args.python, "-c", "import gallery; print(gallery.__file__)"], env=env, cwd=cwd,
                                   capture_output=True, text=True).stdout.strip()
            if not Path(where).resolve().is_relative_to(cwd):
                raise SystemExit(f"{name}: imports {where}, not the checkout {cwd}")
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name, *_ in commands}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in commands}
    for _ in range(args.runs):
        for name, command, env, cwd in commands:
            wall, used = timed(command, env, cwd)
            times[name].append(wall)
            cpu[name].append(used)
    result = {"query": str(args.query), "runs": args.runs, "load_avg_before": load_before,
              "load_avg_after": os.getloadavg(),
              "seconds": {name: summary(t) for name, t in times.items()},
              "cpu_seconds": {name: summary(t) for name, t in cpu.items()}}
    for name, t in times.items():
        c = cpu[name]
        print(f"{name:>20}: wall median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}, "
              f"{len(t)} runs); CPU median {statistics.median(c):.2f} s (min {min(c):.2f})")
    print(f"load average before: {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
