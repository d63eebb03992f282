"""Shared test configuration: hypothesis profiles.

Profiles (select with ``HYPOTHESIS_PROFILE=ci|dev|thorough`` or ``--hypothesis-profile``):
``ci`` is derandomised (the same examples on every run) with no deadline; ``dev`` is random and
quick; ``thorough`` draws many examples for a pre-release run.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The test tensors are tiny: one thread is faster than two (no scheduling overhead).
torch.set_num_threads(1)
