"""Checks of the code's shape that the test suite and CI run."""
