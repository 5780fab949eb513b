"""Named training recipes: the generator settings that differ between the paper and vfbench's default.

``default`` is the recipe that learns best on a CPU budget (README, "Generators that learn"): every
generator predicts x0, and VideoFusion's residual generator is conditioned on the clip's keyframe and
attends across the clip's frames (``residual_temporal``). ``paper`` keeps what the papers state:
eps-prediction (VideoFusion Table 8; VDM; VIDM), VideoFusion's DDIM-50 sampler (Table 8; the default is
DPM-Solver++(2M) at 10 steps) and, for VideoFusion, a per-frame 2D residual
generator that sees only its own frame's latent after Eq. 12 (the paper's CLIP image-embedding
conditioning needs CLIP and a DALL-E 2 prior, which vfbench does not have; ``residual_condition="none"``
is the paper's network without it).

Precedence (one rule everywhere): config defaults < recipe < config file < command-line flags.
"""

from __future__ import annotations

from typing import Any, Dict

from vfbench.errors import UsageError, did_you_mean

RECIPES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "default": {},
    "paper": {
        "videofusion": {"prediction": "eps", "residual_condition": "none", "residual_temporal": False,
                        "min_snr_gamma": 0.0, "sampler": "ddim", "sampling_steps": 50},
        "vdm": {"prediction": "eps", "min_snr_gamma": 0.0},
        "vidm": {"prediction": "eps", "robustness_penalty": True},
    },
}


def recipe_overrides(generator: str, recipe: str) -> Dict[str, Any]:
    """The generator-config overrides of ``recipe`` for ``generator`` (empty for generators it does not name)."""
    if recipe not in RECIPES:
        raise UsageError(did_you_mean("--recipe", recipe, RECIPES))
    return dict(RECIPES[recipe].get(generator, {}))


__all__ = ["RECIPES", "recipe_overrides"]
