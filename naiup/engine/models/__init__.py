"""Loading what the engine runs: checkpoints (single file, diffusers folder, hub id: only the files the
engine loads, with download progress), ControlNet tiles, model families, LoRA fusing, and where the
models live (the residency plan from their sizes, a ControlNet counted with the UNet; parking modules
in host RAM).
"""
