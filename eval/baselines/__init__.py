"""Baselines run through the same pipeline (``logmel``) and published reference scores (``published.csv``)."""
