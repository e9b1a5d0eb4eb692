"""Back-projection of patch centres to 3D camera-frame points: p = d(u, v) K^-1 [u v 1]^T."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointLifter(nn.Module):
    """One 3D point per ViT patch. Pixel coordinates follow the OpenCV convention (pixel (0, 0) has
    its centre at u = v = 0), the one the suites' intrinsics use; depth is sampled bilinearly at the
    patch centre, so the depth map may have any resolution (estimators run at their own)."""

    def __init__(self, image_size: int, patch_size: int):
        super().__init__()
        grid = image_size // patch_size
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * patch_size - 0.5  # pixel coords
        v, u = torch.meshgrid(centres, centres, indexing="ij")  # row-major, as ViT patches are ordered
        self.register_buffer("uv1", torch.stack([u, v, torch.ones_like(u)], -1).view(-1, 3), persistent=False)
        # grid_sample coordinates of the same centres (align_corners=False: -1/+1 are the image edges)
        norm = (self.uv1[:, :2] + 0.5) / image_size * 2.0 - 1.0
        self.register_buffer("sample_grid", norm.view(1, 1, -1, 2), persistent=False)

    def forward(self, depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
        """depth (B, h, w) metres at any resolution, intrinsics (B, 3, 3) of the S x S image
        -> points (B, Np, 3) in the camera frame (metres)."""
        grid = self.sample_grid.expand(depth.shape[0], -1, -1, -1)
        d = F.grid_sample(depth[:, None].float(), grid, mode="bilinear", align_corners=False)  # (B, 1, 1, Np)
        rays = torch.linalg.solve(intrinsics.float(), self.uv1.T.expand(depth.shape[0], -1, -1))  # (B, 3, Np)
        return (rays * d[:, 0]).transpose(1, 2)
