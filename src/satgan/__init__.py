"""satgan: satellite tiles -> DCGAN -> Turing test, as a DVC pipeline."""

from satgan.openmp import choose_wait_policy

# Before anything imports torch: OpenMP reads its wait policy once, when torch loads it (satgan.openmp).
choose_wait_policy()

__version__ = "0.1.0"
