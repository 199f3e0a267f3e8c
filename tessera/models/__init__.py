"""The Tessera model zoo: ``get_model(name)`` builds a reference network with example inputs."""

from tessera.models.zoo import MODEL_NAMES, ZooModel, get_model

__all__ = ["MODEL_NAMES", "ZooModel", "get_model"]
