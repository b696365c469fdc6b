"""Shared modelling blocks: domain-free networks and noise processes any plugin may use.

Like diffusers' ``models`` and ``schedulers``, a network here knows nothing of the noise
process that trains it, and a process knows nothing of the network's insides:

* ``transformer``: ``TransformerDenoiser``, a bidirectional transformer over token ids
  (logits at every position), with its ``TransformerConfig``;
* ``masked_diffusion``: ``MaskedDiffusion``, absorbing-state discrete diffusion over
  token ids: the training loss, the samplers (margin, confidence, ancestral) and
  infilling with given cells held fixed;
* ``autoregressive``: ``Autoregressive``, next-token training and left-to-right sampling
  with given cells, for a ``TransformerDenoiser`` built with ``causal=True``.

A plugin imports them from here (``from genforge.core.blocks import MaskedDiffusion``),
never from another plugin. They import torch; ``genforge.core`` itself does not import them.
"""

from .autoregressive import Autoregressive
from .masked_diffusion import STRATEGIES, MaskedDiffusion, Strategy, Weighting, gumbel_noise, nucleus
from .transformer import TransformerConfig, TransformerDenoiser

__all__ = [
    "Autoregressive",
    "STRATEGIES",
    "MaskedDiffusion",
    "Strategy",
    "TransformerConfig",
    "Weighting",
    "TransformerDenoiser",
    "gumbel_noise",
    "nucleus",
]
