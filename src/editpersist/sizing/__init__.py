"""Sizing the published grid at real shapes with no weights and no GPU.

The engine (this package's `architectures`, `footprint` modules): the published component
configurations of SD 1.4, SDXL base 1.0, FLUX.1-schnell and the judge ViT-bigG-14 as data,
and the peak GPU memory and FLOPs of one workload measured under fake tensors.
"""
