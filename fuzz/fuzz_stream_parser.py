#!/usr/bin/env python3
"""Coverage-guided fuzzing of the stream parser with atheris (libFuzzer). See fuzz/README.md.

.venv/bin/python fuzz/fuzz_stream_parser.py -max_total_time=600 fuzz/work fuzz/corpus
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["minimix", "stream_target"]):
    from stream_target import check


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
