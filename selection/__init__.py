"""Selector plugins (kind ``selector``, run by ``select`` stages): pick something without gradients.

``clip-select`` (DreamFace's CLIP identity selection), ``clip-hair`` (DreamFace's hairstyle and colour),
``head-identity`` (from the seed or the mean head), ``demo-target-identity`` (the demo prior's target).
The folder is not named ``selectors``: that would shadow the standard library's ``selectors`` module.
"""

from selection import clip_select, demo_target, hair_select, head_identity  # noqa: F401  (registers them)
