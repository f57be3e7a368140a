"""Per-sample gradients: vmap with a loop fallback, the factorised linear-layer path, an on-disk store."""

from .linear import LayerFactors, factor_dot, factor_gram, factor_grads, factors, linear_layers
from .per_sample import (directional_losses, flat_per_sample, flatten, mean_grad, per_sample_grads,
    per_sample_grads_loop, per_sample_grads_vmap, unflatten)
from .projection import Projection, make_projection
from .source import GradientSource
from .store import GradientStore, store_key

__all__ = ["GradientSource", "GradientStore", "store_key", "per_sample_grads", "per_sample_grads_vmap",
           "per_sample_grads_loop", "flatten", "unflatten", "flat_per_sample", "mean_grad", "directional_losses",
           "factors", "factor_dot", "factor_gram", "factor_grads", "linear_layers", "LayerFactors", "Projection", "make_projection"]
