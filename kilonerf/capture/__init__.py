"""``kilonerf process``: camera poses for a user's photos or video, by structure from motion on
the CPU (pycolmap), written as an instant-ngp scene that ``kilonerf train`` reads as is."""
