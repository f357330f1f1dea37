from setuptools import setup

# Beam's --setup_file stages the package by running this file (sdist); all metadata
# lives in pyproject.toml.
setup()
