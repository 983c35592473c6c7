"""Packaging for hear_embed; metadata lives in pyproject.toml."""
from setuptools import setup

setup()
