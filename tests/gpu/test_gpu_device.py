"""Device pick and model.max_vram_gb through the real torch.cuda calls (the CPU tests check only our
arithmetic around them)."""

from __future__ import annotations

import pytest
import torch

from naiup.config import ModelConfig
from naiup.engine.device import cap_memory, free_memory_bytes, is_oom, pick_device, vae_dtype
from naiup.engine.engine import Engine

GIB = 2**30


def test_the_picked_device_is_indexed_and_the_cap_reaches_the_allocator(cuda):
    assert cuda.type == "cuda" and cuda.index == torch.cuda.current_device()
    assert pick_device("auto") == cuda
    total = torch.cuda.get_device_properties(cuda).total_memory
    engine = Engine(ModelConfig(device="cuda", max_vram_gb=4))
    try:
        assert engine.device == cuda  # cap_memory ran: with a bare "cuda" it raised ValueError
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if fraction is not None:
            assert fraction(cuda) == pytest.approx(4 * GIB / total)
        assert free_memory_bytes(cuda) <= 4 * GIB
        # The allocator holds us to it: past the cap is a real out-of-memory error, and ours says so.
        with pytest.raises(torch.OutOfMemoryError) as err:
            torch.empty(5 * GIB, dtype=torch.uint8, device=cuda)
        assert is_oom(err.value)
        del err
        # A bare device, as older callers built it, is made explicit inside (the start-up crash).
        cap_memory(torch.device("cuda"), 0)
        if fraction is not None:
            assert fraction(cuda) == 1.0
        assert free_memory_bytes(cuda) > 4 * GIB
    finally:
        cap_memory(cuda, 0)


def test_the_vae_runs_in_bf16_only_on_a_card_that_has_it_natively(cuda):
    native = torch.cuda.get_device_capability(cuda) >= (8, 0)
    assert vae_dtype(cuda) == (torch.bfloat16 if native else torch.float32)
