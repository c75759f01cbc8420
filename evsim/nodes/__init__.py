"""Simulation nodes: CSMS, charging stations (and, later, local controllers and side services)."""
