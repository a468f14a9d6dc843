"""Ships the repository's conf/ as the package ``uptrain.conf``.

conf/ stays at the repository root (the map of the code, edited by users), and a
plain ``pip install .`` carries it inside the package so ``uptrain`` finds its
configs from any working directory through ``pkg://uptrain.conf``.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["uptrain", "uptrain.*"]) + ["uptrain.conf"],
    package_dir={"uptrain.conf": "conf"},
    package_data={"uptrain.conf": ["*.yaml", "**/*.yaml", "**/*.txt"]},
)
