"""The demo prior: an exact diffusion model of a known distribution, so every method runs and is
scored on CPU without weights. See DESIGN.md, "The demo prior". It is not a text-to-face model."""
