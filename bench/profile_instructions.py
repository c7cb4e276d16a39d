"""Machine instructions per group chat delivery, counted by valgrind: a figure that a busy
machine does not disturb (CPU time on a shared 2-core machine varies by tens of percent).

Runs ``bench/profile_inprocess.py`` twice under ``valgrind --tool=cachegrind`` with ``--low``
and ``--high`` messages; the difference of the two instruction counts divided by the extra
deliveries is the cost of one delivery, without the set-up::

    .venv/bin/python bench/profile_instructions.py --shape 20x1
    PYTHONPATH=/tmp/other/src .venv/bin/python bench/profile_instructions.py --shape 20x3

Needs ``valgrind`` (Debian package). Each run takes about half a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(shape: str, messages: int, archive: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={tmp}/out",
            sys.executable,
            str(HERE / "profile_inprocess.py"),
            "--shape",
            shape,
            "--repeat",
            "1",
            "--messages",
            str(messages),
        ]
        if archive:
            argv.append("--archive")
        env = dict(os.environ, PYTHONHASHSEED="0")
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    found = REFS.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="20x1")
    parser.add_argument("--low", type=int, default=20)
    parser.add_argument("--high", type=int, default=120)
    parser.add_argument("--archive", action="store_true")
    args = parser.parse_args()
    accounts, devices = (int(x) for x in args.shape.split("x"))
    low = instructions(args.shape, args.low, args.archive)
    high = instructions(args.shape, args.high, args.archive)
    deliveries = (args.high - args.low) * accounts * devices
    per_delivery = (high - low) / deliveries
    per_message = (high - low) / (args.high - args.low)
    print(
        f"{args.shape}{' archive' if args.archive else ''}: "
        f"{per_delivery:,.0f} instructions per delivery, {per_message:,.0f} per message"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
