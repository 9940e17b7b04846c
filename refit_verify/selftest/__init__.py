"""Mutants: deliberately wrong variants of the reference, each modelling a real refit bug class."""
