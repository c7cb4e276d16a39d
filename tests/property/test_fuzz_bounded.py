"""The stream parser fuzz target (fuzz/), run briefly in CI: the seed corpus, then a few seconds
of coverage-guided fuzzing with atheris when it is installed (hypothesis otherwise). Longer runs
are described in fuzz/README.md."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.stream_target import HEADER, check

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
SECONDS = 5


def test_seed_corpus_passes() -> None:
    seeds = sorted((FUZZ / "corpus").iterdir())
    assert len(seeds) >= 5
    for seed in seeds:
        check(seed.read_bytes())


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_bounded_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)  # libFuzzer adds what it finds to its first folder
    run = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_stream_parser.py"),
            f"-max_total_time={SECONDS}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
    )
    report = run.stderr[-3000:]
    assert run.returncode == 0, report
    assert "Done" in report and "runs in" in report
    assert not list(tmp_path.glob("crash-*")), report


@pytest.mark.skipif(importlib.util.find_spec("atheris") is not None, reason="atheris runs instead")
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda step, body: bytes([step]) + HEADER + body,
            st.integers(0, 255),
            st.binary(max_size=300),
        ),
    )
)
def test_bounded_fuzz_run_with_hypothesis(data: bytes) -> None:
    check(data)
