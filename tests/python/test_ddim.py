"""ctok_py.ddim: timestep spacings as the C++ core computes them (src/model/schedule.cpp).

Run: PYTHONPATH=scripts/python /usr/bin/python3 -m unittest -v tests/python/test_ddim.py
"""
import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "python"))

from ctok_py import ddim  # noqa: E402

torch.set_num_threads(1)


class SpacingTest(unittest.TestCase):
    """Expected lists worked out by hand from NoiseSchedule::sampling_timesteps:
    trailing llround(T - i * (T / steps)) - 1 for i = 0..steps-1 (ratio a double,
    halves away from zero); leading i * (T / steps) (integer ratio) for i = steps-1..0."""

    def test_trailing_matches_cpp(self):
        cases = {
            (1000, 1): [999],
            (1000, 3): [999, 666, 332],          # 666.67 -> 667, 333.33 -> 333
            (1000, 7): [999, 856, 713, 570, 428, 285, 142],
            (10, 4): [9, 7, 4, 2],               # 7.5 -> 8 and 2.5 -> 3: llround, not round()
            (10, 10): [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
        }
        for (t, steps), want in cases.items():
            self.assertEqual(ddim.sampling_timesteps(t, steps, "trailing"), want, (t, steps))
        ts = ddim.sampling_timesteps(1000, 50)   # the default spacing is trailing
        self.assertEqual(ts[:3] + ts[-2:], [999, 979, 959, 39, 19])
        self.assertEqual(ts, list(range(999, 0, -20)))

    def test_leading_matches_cpp(self):
        cases = {
            (1000, 1): [0],
            (1000, 3): [666, 333, 0],
            (1000, 7): [852, 710, 568, 426, 284, 142, 0],
            (10, 4): [6, 4, 2, 0],
        }
        for (t, steps), want in cases.items():
            self.assertEqual(ddim.sampling_timesteps(t, steps, "leading"), want, (t, steps))
        self.assertEqual(ddim.sampling_timesteps(1000, 50, "leading"), list(range(980, -1, -20)))

    def test_leading_is_the_trainers_former_spacing(self):
        """The card's render metrics were made with the trainer's former leading-only DDIM."""
        for steps in (1, 3, 7, 50, 999, 1000):
            ratio = 1000 // steps
            old = list(range(0, 1000, ratio))[:steps][::-1]
            self.assertEqual(ddim.sampling_timesteps(1000, steps, "leading"), old, steps)

    def test_bad_arguments_refused(self):
        with self.assertRaises(ValueError):
            ddim.sampling_timesteps(1000, 0)
        with self.assertRaises(ValueError):
            ddim.sampling_timesteps(1000, 1001)
        with self.assertRaises(ValueError):
            ddim.sampling_timesteps(1000, 10, "linspace")


class SamplerTest(unittest.TestCase):
    def _record(self, **kw):
        seen = []

        def unet(x, t, ctx):
            seen.append(int(t[0]))
            return torch.zeros_like(x)

        ddim.ddim_sample(unet, torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), steps=5,
                         generator=torch.Generator().manual_seed(0), **kw)
        return seen

    def test_sampler_uses_the_spacing(self):
        self.assertEqual(self._record(), [999, 799, 599, 399, 199])
        self.assertEqual(self._record(spacing="leading"), [800, 600, 400, 200, 0])

    def test_perfect_denoiser_recovers_x0_both_spacings(self):
        x0 = torch.randn(1, 4, 8, 8)
        ac = ddim.alphas_cumprod()

        def unet(x, t, ctx):
            a = ac[t[0]]
            return (x - a.sqrt() * x0) / (1 - a).sqrt()

        for spacing in ddim.SPACINGS:
            out = ddim.ddim_sample(unet, torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), steps=10,
                                   guidance=3.0, generator=torch.Generator().manual_seed(0),
                                   spacing=spacing)
            torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4, msg=spacing)


if __name__ == "__main__":
    unittest.main()
