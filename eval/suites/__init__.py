"""Builders for bundled benchmark suites (see ``mini.py``)."""
