"""Screens of the lpm terminal UI."""
