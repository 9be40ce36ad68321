"""Scene formats -> one Scene type; cameras and rays; the built-in procedural scene."""

from kilonerf.data.load import detect_format, load_scene
from kilonerf.data.scene import Scene
from kilonerf.errors import SceneError

__all__ = ["Scene", "SceneError", "detect_format", "load_scene"]
