"""What a run records about itself besides its numbers: the config as flat parameters, and the
backend, precision, package versions and git commit of the segtrain code that ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

from segtrain.config import flatten
from segtrain.machine import versions

PACKAGES = ("segtrain", "keras", "numpy")
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def flat_params(tree: dict) -> dict[str, str]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": "2"}``: trackers take parameters as text
    (lists and empty sections as their text)."""
    return {key: str(value) for key, value in flatten(tree).items()}


def git_commit(folder: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit of the checkout segtrain runs from, or None (an installed wheel, no git)."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def run_facts(backend: str, precision: str) -> dict[str, str]:
    """Backend, dtype policy, versions of segtrain, Keras, NumPy and the backend, and the git commit when there is one."""
    facts = {"backend": backend, "precision": precision}
    found = versions((*PACKAGES, BACKEND_PACKAGES.get(backend, backend)))
    facts.update({f"version.{package}": version for package, version in found.items() if version and package != "python"})
    commit = git_commit()
    if commit:
        facts["git_commit"] = commit
    return facts
