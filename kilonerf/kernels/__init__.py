"""Backends for grouped tiny-MLP evaluation behind one interface."""
