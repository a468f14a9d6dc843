"""Ships the repository's conf/ as the package ``uptrain.conf``.

conf/ stays at the repository root (the map of the code, edited by users), and a
plain ``pip install .`` carries it inside the package so ``uptrain`` finds its
configs from any working directory.
"""
from pathlib import Path

from setuptools import find_packages, setup

# each config group folder is a data-only subpackage of uptrain.conf
groups = sorted(p.name for p in Path("conf").iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
conf_packages = ["uptrain.conf"] + [f"uptrain.conf.{g}" for g in groups]

setup(
    packages=find_packages(include=["uptrain", "uptrain.*"]) + conf_packages,
    package_dir={"uptrain.conf": "conf"},
    package_data={p: ["*.yaml"] for p in conf_packages},
)
