"""Scaling out: adapters that connect this node to others."""
