"""``python -m tests.chaos``: chaos runs outside pytest (``make chaos`` runs the long version).

Runs of at most ``--per-run`` cycles each, alternating the engines' places given
(``internal``: both hosts in one process each, proposal 1; ``external``: both as connector +
engine, proposal 2; see host.demo.twohost.ENGINE_PLACES), until
``--cycles`` faults in all. Each run's seed is printed with its report; ``--seed`` replays
the first run's schedule (the later runs' seeds derive from it). Exit 1 when a run found a
settlement problem or books that do not agree.
"""

from __future__ import annotations

import argparse
import random
import sys

from host.demo.twohost import ENGINE_PLACES
from tests.chaos.chaos import chaos_run, seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--cycles", type=int, default=200, help="faults in all (default 200)")
    parser.add_argument("--per-run", type=int, default=50, help="faults per run (default 50)")
    parser.add_argument(
        "--engines",
        default="internal,external",
        help="where the engines run, comma-separated, alternated: internal, external",
    )
    args = parser.parse_args(argv)
    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    if not engines or any(engine not in ENGINE_PLACES for engine in engines):
        parser.error(f"--engines takes internal and external, got {args.engines!r}")
    first = args.seed if args.seed is not None else random.randrange(2**32)
    left, failed, index = args.cycles, 0, 0
    for seed in seeds(first):
        if left <= 0:
            break
        cycles = min(left, args.per_run)
        engine = engines[index % len(engines)]
        report = chaos_run(seed, cycles, (engine, engine))
        print(report.text(), flush=True)
        if report.verdict.problems or not report.verdict.books_agree:
            failed += 1
        left -= cycles
        index += 1
    print(f"{index} run(s), {args.cycles} faults, first seed {first}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
