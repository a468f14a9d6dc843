"""Ships the repository's conf/ as the package ``uptrain.conf``.

conf/ stays at the repository root (the map of the code, edited by users), and a
plain ``pip install .`` carries it inside the package so ``uptrain`` finds its
configs from any working directory.
"""
from pathlib import Path

from setuptools import find_packages, setup

# each folder under conf/ (config groups, prompt templates) is a data-only subpackage of uptrain.conf
folders = sorted(
    p.relative_to("conf") for p in Path("conf").rglob("*")
    if p.is_dir() and not any(part.startswith(("_", ".")) for part in p.parts)
)
conf_packages = ["uptrain.conf"] + [".".join(("uptrain.conf", *f.parts)) for f in folders]

setup(
    packages=find_packages(include=["uptrain", "uptrain.*"]) + conf_packages,
    package_dir={"uptrain.conf": "conf"},
    package_data={p: ["*.yaml", "*.txt"] for p in conf_packages},
)
