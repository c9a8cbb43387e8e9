"""The engine benchmark's result record, JSON report and printed table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class Result:
    workload: str
    variant: str
    output: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    peak_gpu_gib: float | None = None
    unet_tiles: int = 0  # UNet tiles per step from the plan (1 = untiled canvas)
    unet_calls: list[list[int]] = field(default_factory=list)  # input shape of every UNet call seen
    vae_plan: str = ""  # what the VAE mode resolved to for the decode (auto -> off/exact/low-memory)
    levers: dict = field(default_factory=dict)  # the production levers this run used (see engine_bench)
    notes: str = ""


def machine(device: torch.device) -> dict:
    import diffusers

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _levers(args: argparse.Namespace) -> dict:
    return {
        "family": getattr(args, "family", "sd15"),
        "channels_last": args.channels_last,
        "compile": args.compile,
        "unet_graphs": "on" if args.compile else args.unet_graphs,
        "batch": args.batch,
        "overlap": args.overlap,
        "host_pixels": args.host_pixels,
        "chunk_attention": args.chunk_attention,
        "vram_gb": args.vram_gb,
        "attention_window": args.attention_window,
        "regions": getattr(args, "regions", "0"),
    }


class Log:
    """engine-<UTC stamp>[-small].jsonl (or --jsonl, which several runs may share): a header line
    (machine, levers), then one line per result, appended and flushed the moment it is measured, so a
    run killed by its time limit keeps the results before the kill. `report()` writes the whole run
    as one engine-<UTC stamp>[-small].json at the end."""

    def __init__(self, out: Path, args: argparse.Namespace, device: torch.device) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        family = "-sdxl" if getattr(args, "family", "sd15") == "sdxl" else ""
        self.base = out / f"engine-{self.stamp}{family}{'-small' if args.small else ''}"
        self.args, self.device = args, device
        self.path = getattr(args, "jsonl", None) or self.base.with_suffix(".jsonl")
        self._line({"kind": "run", "when": self.stamp, "levers": _levers(args), "machine": machine(device)})

    def _line(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def result(self, res: Result) -> None:
        self._line({"kind": "result", **asdict(res)})

    def report(self, setup: float, results: list[Result]) -> Path:
        """The whole run as one JSON document (machine, versions, levers and every number)."""
        report = {
            "when": self.stamp,
            "small": self.args.small,
            "levers": _levers(self.args),
            "machine": machine(self.device),
            "setup_s": setup,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "results": [asdict(r) for r in results],
        }
        path = self.base.with_suffix(".json")
        path.write_text(json.dumps(report, indent=2))
        return path


def print_table(results: list[Result]) -> None:
    cols = ["upscale", "encode", "denoise", "decode", "other", "img2img", "png"]
    head = f"{'workload':8} {'variant':48} {'output':>10} " + " ".join(f"{c:>8}" for c in cols)
    # engine = wall - png: bench/README.md's targets are engine time (decoded input -> output pixels).
    print(
        head
        + f" {'engine':>8} {'wall':>8} {'peakGPU':>8} {'ov':>3} {'batch':>5} {'graphs':>6} {'dpix':>4}  notes"
    )
    for r in results:
        cells = " ".join(f"{r.stages[c]:8.3f}" if c in r.stages else f"{'-':>8}" for c in cols)
        peak = f"{r.peak_gpu_gib:8.2f}" if r.peak_gpu_gib is not None else f"{'-':>8}"
        times = f"{r.wall - r.stages.get('png', 0.0):8.3f} {r.wall:8.3f} {peak}"
        lv = r.levers
        levers = (
            f"{lv.get('overlap', '-')!s:>3} {lv.get('tile_batch', '-')!s:>5} "
            f"{_yes(lv.get('unet_graphs')):>6} {_yes(lv.get('device_pixels')):>4}"
        )
        print(f"{r.workload:8} {r.variant:48} {r.output:>10} {cells} {times} {levers}  {r.notes}")


def _yes(value: object) -> str:
    return "-" if value is None else ("yes" if value else "no")
