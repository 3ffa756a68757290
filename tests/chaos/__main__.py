"""``python -m tests.chaos``: chaos runs outside pytest (``make chaos`` runs the long version).

Runs of at most ``--per-run`` cycles each, alternating the modes given (``run``: both hosts
in one process each, proposal 1; ``split``: both as connector + engine, proposal 2), until
``--cycles`` faults in all. Each run's seed is printed with its report; ``--seed`` replays
the first run's schedule (the later runs' seeds derive from it). Exit 1 when a run found a
settlement problem or books that do not agree.
"""

from __future__ import annotations

import argparse
import random
import sys

from tests.chaos.chaos import chaos_run, seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--cycles", type=int, default=200, help="faults in all (default 200)")
    parser.add_argument("--per-run", type=int, default=50, help="faults per run (default 50)")
    parser.add_argument(
        "--modes", default="run,split", help="comma-separated, alternated: run, split"
    )
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or any(mode not in ("run", "split") for mode in modes):
        parser.error(f"--modes takes run and split, got {args.modes!r}")
    first = args.seed if args.seed is not None else random.randrange(2**32)
    left, failed, index = args.cycles, 0, 0
    for seed in seeds(first):
        if left <= 0:
            break
        cycles = min(left, args.per_run)
        mode = modes[index % len(modes)]
        report = chaos_run(seed, cycles, (mode, mode))
        print(report.text(), flush=True)
        if report.verdict.problems or not report.verdict.books_agree:
            failed += 1
        left -= cycles
        index += 1
    print(f"{index} run(s), {args.cycles} faults, first seed {first}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
