"""Benchmarks: ``make bench`` runs them all (see run.py for the convention)."""
