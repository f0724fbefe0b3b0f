"""hbjax: Heat and Blur (Brama and Grinshpoun), an interpretability based defense against
adversarial examples, in JAX: LRP heatmaps, the defense, the NDCG measure and attacks."""

from hbjax import attacks, data, defense, errors, lrp, metrics, models, validation, xla
from hbjax.errors import HbjaxError
from hbjax.xla import jit

__version__ = "0.1.0"
__all__ = [
    "HbjaxError", "attacks", "data", "defense", "errors", "jit", "lrp", "metrics", "models",
    "validation", "xla",
]  # fmt: skip
