"""The fields: the teachers (fast grid, the paper's NeRF) and the grid of tiny MLPs."""
