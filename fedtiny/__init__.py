"""fedtiny: federated TinyML fault classification, from training to firmware to bench."""
__version__ = "0.1.0"
