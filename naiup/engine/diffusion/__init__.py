"""The tiled img2img loop: tile planning and blending, samplers, the prompt encoders (SD1.5 and SDXL) and
per-step prompt schedules.
"""
