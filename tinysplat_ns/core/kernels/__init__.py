"""TinySplat's compiled CPU kernels, each beside the Python that calls it: the tile rasterizer
(rasterize), the projection and SH colours (project), SSIM (ssim); their vector lanes (lanes.h) and
their build (build). `core/rasterization.py` dispatches to them, to the PyTorch versions or to gsplat.
"""
