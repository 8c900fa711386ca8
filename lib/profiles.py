"""Run profiles: how big a chapter's experiments are.

- ``smoke``: seconds; what CI runs (nbval) to check that every cell still works.
- ``cpu``:   minutes on 2 CPU cores; the results the book shows.
- ``gpu``:   full-scale reruns on a CUDA machine; coherent code, not tested here.

A chapter's ``parameters`` cell reads its default profile from the environment
variable ``BOOK_PROFILE`` (``cpu`` when unset) so that ``BOOK_PROFILE=smoke pytest
--nbval-lax`` runs everything small, while papermill overrides it explicitly.
"""

from __future__ import annotations

import os
from typing import TypeVar

PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu")
ENV_VAR = "BOOK_PROFILE"

T = TypeVar("T")


def check_profile(profile: str) -> str:
    """Return ``profile`` unchanged, or raise ``ValueError`` naming the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return profile


def default_profile() -> str:
    """The profile named by ``$BOOK_PROFILE``, else ``"cpu"``."""
    return check_profile(os.environ.get(ENV_VAR, "cpu"))


def pick(profile: str, *, smoke: T, cpu: T, gpu: T) -> T:
    """The value for ``profile``: ``pick("cpu", smoke=10, cpu=1000, gpu=10**5) == 1000``."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[check_profile(profile)]
