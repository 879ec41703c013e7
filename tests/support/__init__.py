"""Helpers shared by the test tiers (on sys.path through pytest's ``pythonpath`` setting)."""
