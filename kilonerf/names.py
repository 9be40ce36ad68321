"""The names commands accept (presets, teachers, stages, models, formats), in one place for the
command line and the code that acts on them; importing this module costs nothing."""

PRESETS = ("cpu", "paper")
TEACHERS = ("fast", "nerf")
STAGES = ("teacher", "occupancy", "distill", "finetune")
MODELS = ("teacher", "student")
SCENE_FORMATS = ("blender", "nsvf", "llff", "ngp")
"""Formats a scene folder is read in (detected)."""
WRITE_FORMATS = ("nsvf", "blender")
"""Formats ``kilonerf convert`` writes."""
SCENE_TYPES = ("object", "forward", "unbounded")
"""How space maps into the box the fields live in: ``object`` (the box itself, the paper's),
``forward`` (forward-facing captures in normalised device coordinates) or ``unbounded`` (360°
captures: a foreground box and the rest of space contracted around it)."""
PROCEDURAL_KINDS = ("object", "unbounded")
"""Scenes ``kilonerf procedural`` writes: the objects on white with alpha, or a 360° capture of
them in surroundings (``kilonerf/data/procedural.py``)."""
