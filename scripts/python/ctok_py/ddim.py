"""The one DDIM sampler on the Python side, with the C++ core's timestep spacings.

    from ctok_py import ddim
    ac = ddim.alphas_cumprod()                       # scaled-linear betas 0.00085-0.012, 1000
    ts = ddim.sampling_timesteps(1000, 50)           # [999, 979, ..., 19] (trailing)
    z = ddim.ddim_sample(unet, cond, uncond, steps=50, spacing="trailing")

``spacing`` follows src/model/schedule.cpp (NoiseSchedule::sampling_timesteps) index for
index: "trailing" (the C++ default) is round(T - i T / steps) - 1 for i = 0 .. steps-1,
"leading" is i * (T // steps) for i = steps-1 .. 0 (diffusers' "leading" without
steps_offset). Each step goes to the next timestep's alpha_cumprod; the last goes to 1.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS = 0.00085, 0.012, 1000
SPACINGS = ("trailing", "leading")


def alphas_cumprod(beta_start: float = BETA_START, beta_end: float = BETA_END,
                   n: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """Scaled-linear betas (sqrt-linear, squared), cumulative product of 1 - beta."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def _llround(x: float) -> int:
    """std::llround: halves away from zero (Python's round() goes to even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def sampling_timesteps(num_train_timesteps: int, steps: int,
                       spacing: str = "trailing") -> List[int]:
    """Descending sampling timesteps, as NoiseSchedule::sampling_timesteps in C++."""
    n = num_train_timesteps
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be trailing or leading, found {spacing!r}")
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in 1..{n}, found {steps}")
    if spacing == "trailing":
        ratio = n / steps
        return [_llround(n - i * ratio) - 1 for i in range(steps)]
    ratio = n // steps
    return [i * ratio for i in range(steps - 1, -1, -1)]


@torch.no_grad()
def ddim_sample(unet, cond: Tensor, uncond: Tensor, steps: int = 50, guidance: float = 4.0,
                generator: Optional[torch.Generator] = None, eta: float = 0.0,
                shape: Tuple[int, int, int] = (4, 8, 8), spacing: str = "trailing",
                alphas: Optional[Tensor] = None) -> Tensor:
    """DDIM with classifier-free guidance on an epsilon-predicting ``unet(x, t, context)``.

    ``cond`` [B, L, W] and ``uncond`` [1, L, W] are text hidden states; the initial noise
    is drawn from ``generator`` with ``shape`` per image. ``alphas``: alpha_cumprod
    (default :func:`alphas_cumprod`)."""
    ac = alphas_cumprod() if alphas is None else alphas
    ts = sampling_timesteps(len(ac), steps, spacing)
    b = cond.shape[0]
    x = torch.randn((b,) + tuple(shape), generator=generator)
    ctx = torch.cat([uncond.expand(b, -1, -1), cond], dim=0)
    for i, t in enumerate(ts):
        tt = torch.full((2 * b,), t, dtype=torch.long)
        eps_u, eps_c = unet(torch.cat([x, x], 0), tt, ctx).chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        a_t = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        dir_xt = (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        x = a_prev.sqrt() * x0 + dir_xt
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator)
    return x
