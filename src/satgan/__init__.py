"""satgan: satellite tiles -> DCGAN -> Turing test, as a DVC pipeline."""

__version__ = "0.1.0"
