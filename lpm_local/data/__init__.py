"""Data in and out: importing chat logs, .lpm bundles, verified wipes."""
