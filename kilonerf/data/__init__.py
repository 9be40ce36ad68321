"""Scene formats -> one Scene type; cameras and rays; the built-in procedural scene."""
