"""Widgets of the lpm terminal UI."""
