"""Batch tests (a package so that mypy tells its conftest from tests/conftest.py)."""
