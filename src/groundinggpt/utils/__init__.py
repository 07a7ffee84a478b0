"""Utilities: plotting of predictions."""
