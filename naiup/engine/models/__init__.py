"""Loading what the engine runs: checkpoints (single file, diffusers folder, hub id), model families, LoRA
fusing, parking modules in host RAM.
"""
