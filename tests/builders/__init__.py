"""Builders shared by the test areas (tests/plugin, tests/eval, tests/train): plain helpers, not test modules."""
