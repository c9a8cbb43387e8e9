"""Our own device arithmetic, as pure functions: which index, which fraction, how much is free under
model.max_vram_gb, which VAE dtype, which errors are out-of-memory, where a model is. The torch calls
they feed are exercised on a real GPU by tests/gpu (no torch API is stubbed here)."""

from __future__ import annotations

import pytest
import torch

from naiup.engine import device as dev
from naiup.engine.device import (
    cuda_memory_fraction,
    explicit_device,
    free_within_cap,
    is_oom,
    misplaced,
    mps_memory_fraction,
    same_device,
    vae_dtype,
    vae_dtype_for,
    with_index,
)
from naiup.engine.upscale.tiles import tile_for_memory
from naiup.engine.vae.memory import VaeMemory, choose_vae_plan

GIB = 2**30


def test_a_bare_cuda_device_gets_the_current_index_and_others_stay_as_they_are():
    # torch.cuda.set_per_process_memory_fraction refuses torch.device("cuda") (ValueError: "Expected a
    # torch.device with a specified index"): every CUDA device naiup uses is indexed.
    assert with_index(torch.device("cuda"), 1) == torch.device("cuda:1")
    assert with_index(torch.device("cuda:2"), 0) == torch.device("cuda:2")
    assert with_index(torch.device("cpu"), 3) == torch.device("cpu")
    assert with_index(torch.device("mps"), 0) == torch.device("mps")
    # Already explicit: no CUDA call is needed to resolve these (there is no GPU here).
    assert explicit_device("cuda:1") == torch.device("cuda", 1)
    assert explicit_device(torch.device("cpu")) == torch.device("cpu")


def test_a_tensor_on_cuda_0_is_on_the_picked_device_but_not_on_another_card():
    assert same_device(torch.device("cuda:0"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda:1"), torch.device("cuda:0"))
    assert same_device(torch.device("mps:0"), torch.device("mps"))  # MPS tensors say mps:0
    assert not same_device(torch.device("cpu"), torch.device("cuda:0"))


def test_the_allocator_fraction_for_a_cap():
    assert cuda_memory_fraction(4 * GIB, 80 * GIB) == pytest.approx(4 / 80)
    assert isinstance(cuda_memory_fraction(4 * GIB, 80 * GIB), float)  # torch refuses anything else
    assert cuda_memory_fraction(0, 80 * GIB) == cuda_memory_fraction(None, 80 * GIB) == 1.0  # no cap
    assert cuda_memory_fraction(100 * GIB, 80 * GIB) == 1.0  # a cap above the card is the card
    # MPS: a fraction of the recommended working set, where 0 means "no limit".
    assert mps_memory_fraction(0, 16 * GIB) == 0.0
    assert mps_memory_fraction(4 * GIB, 16 * GIB) == pytest.approx(0.25)
    assert mps_memory_fraction(1, 16 * GIB) == 1e-3  # never 0: that would lift the cap


def test_a_cap_bounds_free_memory_and_blocks_torch_caches_count_as_free():
    # An 80 GiB card with 70 GiB free to the driver, of which torch has allocated 2 GiB (the models).
    assert free_within_cap(70 * GIB, 2 * GIB, 2 * GIB, None) == 70 * GIB
    assert free_within_cap(70 * GIB, 2 * GIB, 2 * GIB, 4 * GIB) == 2 * GIB  # 4 GiB cap - 2 GiB ours
    assert free_within_cap(70 * GIB, 5 * GIB, 5 * GIB, 4 * GIB) == 0  # never negative
    # 4 GiB freed by tensors but still held by the caching allocator: free to us, not to the driver.
    assert free_within_cap(70 * GIB, 6 * GIB, 2 * GIB, None) == 74 * GIB
    assert free_within_cap(70 * GIB, 6 * GIB, 2 * GIB, 8 * GIB) == 6 * GIB  # the cap counts tensors


def test_tile_sizes_and_vae_mode_follow_the_cap():
    size, per_px = (3328, 4864), 60_000.0
    uncapped = tile_for_memory(free_within_cap(70 * GIB, 2 * GIB, 2 * GIB, None), size, per_px, torch.float16)
    capped = tile_for_memory(
        free_within_cap(70 * GIB, 2 * GIB, 2 * GIB, 4 * GIB), size, per_px, torch.float16
    )
    assert capped < uncapped
    # A W4-sized decode that fits 70 GiB untiled no longer does within a 4 GiB cap.
    mem = VaeMemory(untiled=20 * GIB, head=1 * GIB, pooled=12 * GIB, tile=GIB // 4)
    assert choose_vae_plan(mem, 70 * GIB, 64 * GIB).mode == "off"
    assert choose_vae_plan(mem, free_within_cap(70 * GIB, 2 * GIB, 2 * GIB, 4 * GIB), 64 * GIB).park_on_host


def test_the_cap_is_a_no_op_on_the_cpu(monkeypatch):
    monkeypatch.setattr(dev, "_caps", {})
    dev.cap_memory(torch.device("cpu"), 4 * GIB)
    assert dev.free_memory_bytes(torch.device("cpu")) is None


def test_the_vae_is_bf16_only_where_the_card_has_it_natively_and_never_fp16():
    assert vae_dtype_for("cuda", native_bf16=True) == torch.bfloat16  # Ampere and later
    # Turing/Pascal: torch.cuda.is_bf16_supported() says True by emulation, cuDNN has no bf16 convs.
    assert vae_dtype_for("cuda", native_bf16=False) == torch.float32
    for kind in ("mps", "cpu"):
        assert (
            vae_dtype_for(kind, native_bf16=True) == vae_dtype_for(kind, native_bf16=False) == torch.float32
        )
    assert vae_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 MB)"),
    ],
)
def test_every_kind_of_out_of_memory_error_is_one(exc):
    assert is_oom(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu"),
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        ValueError("a bug, not memory"),
    ],
)
def test_other_errors_are_not_out_of_memory(exc):
    assert not is_oom(exc)


def test_misplaced_counts_tensors_off_the_device_or_in_the_wrong_dtype():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Embedding(3, 2))
    cpu = torch.device("cpu")
    assert misplaced(model, cpu, torch.float32) == (0, 0)
    model[1].to(torch.device("meta"))  # half a model left elsewhere, as a failed move back leaves it
    model[2].to(torch.float16)
    assert misplaced(model, cpu, torch.float32) == (2, 1)
    assert misplaced(model, torch.device("meta"), torch.float16) == (3, 4)


class _Recorded(torch.nn.Linear):
    """A model that notes every .to() asked of it (our own module: torch's .to() still does the work)."""

    def __init__(self) -> None:
        super().__init__(4, 4)
        self.moves: list[tuple] = []

    def to(self, *args, **kwargs):  # type: ignore[override]
        self.moves.append((*args, *kwargs.values()))
        return super().to(*args, **kwargs)


def test_loading_casts_before_it_moves_so_no_fp32_model_lands_on_the_gpu():
    from naiup.engine.models import load as models

    meta = torch.device("meta")  # stands in for the accelerator
    model = _Recorded()
    models._place(model, meta, torch.float16)
    # One .to(device, dtype): tensor by tensor, never the whole fp32 model on the device first.
    assert model.moves == [(meta, torch.float16)]
    assert misplaced(model, meta, torch.float16) == (0, 0)
    model = _Recorded()
    models._place(model, torch.device("cpu"), torch.float32)
    assert model.moves == []  # already in place: no .to() (diffusers warns on each dtype .to())
    model.to(torch.bfloat16)
    model.moves.clear()
    assert dev.place(model, torch.device("cpu"), torch.float32)
    assert model.moves == [(torch.device("cpu"), torch.float32)]
