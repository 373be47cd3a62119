"""The W2S methods, one module each (pipelines/methods/<module>.py), and their registry.

    weak_vote    labellers naive / ensemble; methods naive, soft, ensemble (seed 003 Eq. 2)
    aux_conf     the auxiliary confidence loss (seed 003 Eq. 1)
    conflict     seed 002's deception setting: explicit / implicit conflicting objectives
    bayes        the Bayesian multi-weak EDL loss (seed 003 Eq. 3-5)
    reliability  reliability-aware labels and rel_filter / rel_reweight (seed 001)
    seam         SEAM and its baselines' label sources (seed 000)
    joint        joint decoding and the generation methods (seed 003 section 4)

Importing this package registers them; a new method is a module that calls `register` (see
docs/ARCHITECTURE.md), plus its line below.
"""

from pipelines.methods import aux_conf, bayes, conflict, joint, reliability, seam, weak_vote  # noqa: F401  (registration)
from pipelines.methods.registry import LABELLERS, METHODS, Labeller, Method, labeller, method, register, unfit

__all__ = ["LABELLERS", "METHODS", "Labeller", "Method", "labeller", "method", "register", "unfit"]
