"""Encodings, teacher radiance fields and the grid of tiny MLPs."""
