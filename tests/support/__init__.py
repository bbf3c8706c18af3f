"""Test support shared by the test packages and the benchmarks' tests (not a test module)."""
