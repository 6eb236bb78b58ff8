"""The prior: the models that score renders (diffusion backbones, CLIP), pretrained or the demo prior.

:func:`choose_prior` decides once, when a run starts, where each model comes from
(:class:`PriorChoice`, kept on the run context); guidance and selectors then ask for a backbone or
a CLIP by model name and get the one the run's choice calls for.
"""

from headgen.prior.choice import PriorChoice, choose_prior, switch_off_missing

__all__ = ["PriorChoice", "choose_prior", "switch_off_missing"]
