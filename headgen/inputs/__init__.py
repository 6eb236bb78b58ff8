"""Guidance inputs: what a guidance needs besides the render, made each step by a small provider.

A guidance declares the inputs it reads (:attr:`guidance.base.Guidance.inputs`, e.g.
``("landmark_map",)``); the optimize stage builds one provider per declared input (the stage's
``inputs.<name>`` node, or the provider registered under the input's own name with its defaults)
and hands the values to the guidance in ``GuidanceInput.inputs``.
"""

from headgen.inputs import edit_text, landmark_map, source_render  # noqa: F401  (registers them)
from headgen.inputs.base import InputProvider, StepState

__all__ = ["InputProvider", "StepState"]
