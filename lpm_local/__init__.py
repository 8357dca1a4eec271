"""lpm-local: a private terminal assistant with Latent Personal Memory."""

__version__ = "0.1.0"
