"""CI smoke test: the engine benchmark runs end to end on CPU with --small and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_engine_bench_small_runs_and_reports_every_stage(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "engine_bench.py"), "--small", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = tmp_path.glob("engine-*-small.json")
    data = json.loads(report.read_text())
    ours = [r for r in data["results"] if r["variant"].startswith("naiup")]
    base = [r for r in data["results"] if r["variant"].startswith("diffusers")]
    assert {r["workload"] for r in ours} == {r["workload"] for r in base} == {"W2", "W4"}
    for r in ours:
        assert set(r["stages"]) == {"upscale", "encode", "denoise", "decode", "png"}
        assert r["wall"] > 0
    assert {r["output"] for r in ours if r["workload"] == "W4"} == {"256x384"}
    assert "W4" in proc.stdout and "wall" in proc.stdout
