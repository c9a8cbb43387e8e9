"""Where each model of a loaded set lives, and the moves a residency plan asks for.

    placement = Placement(models, device)       # nothing moves yet
    placement.settle(plan)                       # TEs and ControlNet to the device or host RAM, as
                                                 # the plan says
    placement.ensure()                           # every model where it belongs (start of each job)
    with placement.encoding(needed):             # TEs visit the device to encode a prompt
        ...
    placement.on_device()                        # the models on the device now (VAE parking moves these)

The UNet and VAE always belong on the device. The text encoders do too unless the plan
(residency.plan_residency) has them wait in host RAM between prompts, and so does the set's
ControlNet unless the plan has it wait there (a job that does not run it, on a card without room for
it). A ControlNet on the device runs beside every UNet call, so wherever the UNet goes (host RAM
while the text encoders visit, or while the VAE needs the room) it goes too. Host copies are kept in
the dtype they run in on the device (fp16), so a visit is one copy each way and no cast.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from naiup.engine.device import empty_cache, place, same_device
from naiup.engine.models.offload import parked
from naiup.engine.models.residency import Residency, dtype_of, model_sizes, module_bytes

__all__ = ["Placement"]

log = logging.getLogger(__name__)
_CPU = torch.device("cpu")


class Placement:
    def __init__(self, models, device: torch.device) -> None:
        """`models`: a models.load.SDModels, wherever its modules are now."""
        self.device = device
        self.sizes = model_sizes(models)
        self.residency = Residency()
        self.unet, self.vae = models.unet, models.vae
        self.controlnet: nn.Module | None = models.controlnet
        self.text_encoders: list[nn.Module] = [
            te for te in (models.text_encoder, models.text_encoder_2) if te is not None
        ]
        # The dtypes they were loaded in (load_models casts them for the device): kept on every move.
        self._dtype = {id(m): dtype_of(m) for m in self.modules()}

    def _home(self, module: nn.Module) -> torch.device:
        if module in self.text_encoders and not self.residency.text_encoders_resident:
            return _CPU
        if module is self.controlnet and not self.residency.controlnet_resident:
            return _CPU
        return self.device

    def modules(self) -> list[nn.Module]:
        """Every model of the set, wherever it belongs now."""
        cn = [self.controlnet] if self.controlnet is not None else []
        return [self.unet, *cn, *self.text_encoders, self.vae]

    def denoisers(self) -> list[nn.Module]:
        """The UNet and the set's ControlNet when it is on the device: they run together and move
        together (one waiting in host RAM is not brought to the device by a move of the UNet)."""
        if self.controlnet is None or not self.residency.controlnet_resident:
            return [self.unet]
        return [self.unet, self.controlnet]

    def on_device(self) -> list[nn.Module]:
        """The SD models that belong on the device besides the VAE (the UNet, its ControlNet, and the
        text encoders when resident)."""
        return [*self.denoisers(), *(self.text_encoders if self.residency.text_encoders_resident else ())]

    def device_bytes(self) -> int:
        """Bytes the set holds on the device now (what a new plan may count as its own)."""
        if self.device.type == "cpu":
            return 0
        return sum(
            module_bytes(m, self._dtype[id(m)])
            for m in self.modules()
            if same_device(next(m.parameters()).device, self.device)
        )

    def settle(self, residency: Residency) -> None:
        """Adopt `residency`, moving the text encoders and the ControlNet where it says they live."""
        self.residency = residency
        movable = [m for m in self.modules() if m is not self.unet and m is not self.vae]
        # Out to host RAM first: what comes in may need the room what goes out leaves.
        movable.sort(key=lambda m: self._home(m) != _CPU)
        moved = [m for m in movable if place(m, self._home(m), self._dtype[id(m)])]
        for m in moved:
            log.info(
                "%s now on %s (plan needs %.2f GB)",
                type(m).__name__,
                "host RAM" if self._home(m) == _CPU else self.device,
                residency.need / 1e9,
            )
        if any(self._home(m) == _CPU for m in moved):
            empty_cache(self.device)

    def ensure(self, quiet: bool = False) -> None:
        """Every model wholly where it belongs in its dtype. Checked at the start of every job (a few
        hundred tensors: well under a millisecond), not only after the last one: a parked model whose
        way back ran out of memory (offload.parked) is left partly in host RAM, and the next job
        would fail on mixed devices."""
        for module in self.modules():
            home = self._home(module)
            if place(module, home, self._dtype[id(module)]) and not quiet:
                log.warning("%s was not all on %s; moved it back", type(module).__name__, home)

    @contextlib.contextmanager
    def encoding(self, needed: bool) -> Iterator[None]:
        """The text encoders on the device for the block when they wait in host RAM and a prompt
        needs encoding (`needed`: the prompt encoder's cache lacks one); the UNet (with its
        ControlNet) steps out while they run when the plan says they do not fit beside it. Everything
        is back home afterwards, also after an error."""
        if not needed or self.residency.text_encoders_resident or self.device.type == "cpu":
            yield
            return
        steps_out = self.residency.unet_steps_out
        with parked(self.denoisers(), self.device) if steps_out else contextlib.nullcontext():
            try:
                for te in self.text_encoders:
                    te.to(self.device)
                yield
            finally:
                for te in self.text_encoders:
                    te.to(_CPU)
                empty_cache(self.device)
