"""The ESRGAN-family upscaler (spandrel): loading built-in or user weights and running them in overlapping
tiles.
"""
