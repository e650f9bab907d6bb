"""Training-time image augmentation: random integer shifts and Gaussian pixel noise.

The batcher calls the augmentation with a `torch.Generator` derived from (seed, epoch, step),
and every random number here is drawn from that generator only, so an augmented batch is a
pure function of the run's seed and position: resuming reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from hone.config import DataConfig, opt
from hone.data.base import Preprocessor
from hone.errors import ConfigError


def is_image(input_shape: Sequence[int]) -> bool:
    """Images are (C, H, W) per sample; they get per-channel scaling and may be augmented."""
    return len(input_shape) == 3


def background(pre: Preprocessor, input_shape: Sequence[int]) -> tuple[float, ...]:
    """Per channel, the value a raw 0 pixel takes after scaling: what a shift fills in."""
    channels = input_shape[0]
    if pre.kind == "none":
        return (0.0,) * channels
    pixels = len(pre.shift) // channels
    return tuple(-pre.shift[c * pixels] / pre.scale[c * pixels] for c in range(channels))


@dataclass(frozen=True)
class ShiftAndNoise:
    """Shift each image by up to +-max_shift pixels (per axis), then add N(0, noise_std) noise."""

    max_shift: int
    noise_std: float
    fill: tuple[float, ...]  # per channel, the scaled background that shifted-in pixels get

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert x.dim() == 4, x.shape  # (B, C, H, W)
        if self.max_shift:
            x = self._shift(x, generator)
        if self.noise_std:
            x = x + self.noise_std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return x

    def _shift(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # torch has no per-sample roll with fill, so pad once and gather a shifted window
        # per sample with one advanced index (exact, unlike resampling with grid_sample).
        B, C, H, W = x.shape
        s = self.max_shift
        offsets = torch.randint(-s, s + 1, (B, 2), generator=generator).to(x.device)  # (dy, dx)
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, C, 1, 1)
        padded = F.pad(x - fill, (s, s, s, s)) + fill  # (B, C, H+2s, W+2s)
        # Output pixel (i, j) reads input pixel (i - dy, j - dx), i.e. padded (i - dy + s, j - dx + s).
        rows = torch.arange(H, device=x.device)[None, :] + s - offsets[:, :1]  # (B, H)
        cols = torch.arange(W, device=x.device)[None, :] + s - offsets[:, 1:]  # (B, W)
        batch = torch.arange(B, device=x.device)[:, None, None]
        out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()

    def rescaled(self, pre: Preprocessor, input_shape: Sequence[int]) -> ShiftAndNoise:
        """The same augmentation for data scaled by `pre` (a refit, e.g. in k-fold)."""
        return replace(self, fill=background(pre, input_shape))


@dataclass
class AugmentConfig:
    """The `data.*` keys of a data set that may hold images (digits, mnist, npz, custom)."""

    augment_shift: int = opt(
        0, "images: random shift of up to this many pixels while training", ge=0
    )
    augment_noise: float = opt(0.0, "images: std of Gaussian noise added while training", ge=0)


def build_augment(
    cfg: DataConfig, input_shape: Sequence[int], pre: Preprocessor
) -> ShiftAndNoise | None:
    """The augmentation `cfg` asks for on data of `input_shape` scaled by `pre`, or None.

    A data set of flat rows only (csv, synthetic_linear) has no augment keys: never augmented.
    """
    if not isinstance(cfg.options, AugmentConfig):
        return None
    if not cfg.augment_shift and not cfg.augment_noise:
        return None
    if not is_image(input_shape):
        raise ConfigError(
            f"data.augment_shift and data.augment_noise need image data (C, H, W), got samples of "
            f"shape {tuple(input_shape)} from data set {cfg.name!r}; set --data.augment_shift=0 "
            "--data.augment_noise=0"
        )
    if cfg.augment_shift >= min(input_shape[1:]):
        raise ConfigError(
            f"data.augment_shift must be smaller than the image size {tuple(input_shape[1:])}, got "
            f"{cfg.augment_shift}; set --data.augment_shift={max(1, min(input_shape[1:]) // 4)}"
        )
    return ShiftAndNoise(cfg.augment_shift, cfg.augment_noise, background(pre, input_shape))
