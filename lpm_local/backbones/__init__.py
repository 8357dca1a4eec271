"""Backbones: the registry, loading (hub, NF4, GGUF cache) and the projector weights shipped
per backbone."""
