"""Untrained generators whose samples depend on their noise.

A fresh U-Net's output layers are zero-initialised, and with x0-prediction (the default) a zero output
is a flat grey clip whatever the noise: tests of randomness plumbing (same seed same bytes, shared base
noise, control grids) need nets whose output does depend on their input. ``nonzero_outputs`` fills
every all-zero parameter with small seeded values (deterministic: same seed, same weights).
"""

from __future__ import annotations

import torch


def nonzero_outputs(model: torch.nn.Module, seed: int = 1, scale: float = 0.02) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not bool(p.any()):
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


def perturbed(model: torch.nn.Module, seed: int = 1, scale: float = 0.02) -> torch.nn.Module:
    """Every parameter moved by small seeded noise: a briefly trained x0-predicting net (output layers still
    near zero) whose samples then depend on their noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model
