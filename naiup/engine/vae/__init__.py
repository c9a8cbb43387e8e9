"""The exact tiled VAE: encoder/decoder stages run tile by tile with GroupNorm statistics pooled over the
whole image, attention, and the memory plan.
"""
