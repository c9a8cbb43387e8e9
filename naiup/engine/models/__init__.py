"""Loading what the engine runs: checkpoints (single file, diffusers folder, hub id: only the files the
engine loads, with download progress), model families, LoRA fusing, and where the models live (the
residency plan from their sizes; parking modules in host RAM).
"""
