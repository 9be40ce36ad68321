"""Volume rendering, occupancy grids, ray marching and the fast renderer."""
