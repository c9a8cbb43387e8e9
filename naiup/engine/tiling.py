"""Tiled diffusion: tile grid, blend weights, tiled predictor (tiling issue).

CONTRACT:
    plan_tiles(latent_h: int, latent_w: int, tile: int, overlap: int) -> TilePlan
    blend_weights(plan, method: "mixture" | "multidiffusion") -> fp32 weights summing to 1 everywhere
    tiled_predictor(guided: GuidedDenoiser, plan: TilePlan, method: str, batch_size: int) -> GuidedDenoiser
        (see refine.py for GuidedDenoiser)
"""
