"""Rendering: one compositing recurrence, packed samples, the dense reference, the fast
renderer, and the renderers of the student and the teachers."""
