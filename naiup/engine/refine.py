"""Our own img2img loop on a latent canvas (engine-core issue).

CONTRACT — the seam the tiling issue plugs into:
    GuidedDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        (x: (B,4,h,w) latents, t: scalar timestep tensor) -> model output (B,4,h,w), CFG already applied
        (batch 2B through the UNet only when cfg > 1); conditioning computed once per image and
        expanded to B inside it. Built by make_guided_denoiser(unet, cond, uncond, cfg).
    The loop calls `predict(x_canvas, t)` once per step on the whole canvas, then ONE scheduler step
    on the whole canvas. Untiled: predict = guided. Tiled: predict = tiling.tiled_predictor(guided,
    plan, batch_size) which runs fixed-shape tiles in batches through `guided` and blends.
"""
