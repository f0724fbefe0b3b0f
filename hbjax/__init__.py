"""hbjax: Heat and Blur (Brama and Grinshpoun), an interpretability based defense against
adversarial examples, in JAX: LRP heatmaps, the defense, the NDCG measure and attacks."""

from hbjax import attacks, defense, lrp, metrics, models, xla
from hbjax.xla import jit

__version__ = "0.1.0"
__all__ = ["attacks", "defense", "jit", "lrp", "metrics", "models", "xla"]
