"""Occupancy: the grid of occupied voxels (``grid``), building it from a field (``build``),
space carving with the training views (``carving``) and sampling rays where it is occupied
(``sampling``)."""
