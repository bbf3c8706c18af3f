"""Tests of core.storage (the contract every backend runs is tests/support/storage.py)."""
