"""Trace builders for the cost-policy benchmark (generated on the fly; never committed as CSV)."""
