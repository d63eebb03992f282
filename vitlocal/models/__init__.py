"""The model zoo: one readable file per family, all registered in one registry.

``create_model(name, **overrides)`` builds a published model with its official configuration;
``list_models()`` lists the names.
"""

from vitlocal.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
