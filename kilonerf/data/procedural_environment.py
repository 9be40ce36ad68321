"""The surroundings of the procedural 360° scene: an endless checkered ground under a sky with
a ring of distant pillars and mountains on the horizon, so that every pixel sees something
(no alpha) at every distance from the objects to infinity, as in a real capture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

HORIZON = np.array([0.86, 0.89, 0.93])
ZENITH = np.array([0.32, 0.52, 0.84])
MOUNTAIN = np.array([0.38, 0.44, 0.42])


class Occluders(Protocol):
    """What casts shadows on the ground: the scene's objects and its light."""

    light_dir: np.ndarray

    def nearest_hit(self, origins: np.ndarray, dirs: np.ndarray, t_min: float = 1e-9) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Environment:
    """Ground plane at ``ground_z`` (checker cells of ``cell``, fading into haze with distance)
    and a sky that depends on the view direction alone (infinitely far)."""

    ground_z: float
    cell: float = 1.0
    haze_distance: float = 14.0

    def colour(self, scene: Occluders, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour (N, 3) of rays (N, 3) (unit ``dirs``) that miss every object, and their
        distance (N,) (``inf`` for the sky)."""
        rgb = self.sky(dirs)
        down = dirs[:, 2] < -1e-9
        t = np.full(len(origins), np.inf)
        t[down] = (self.ground_z - origins[down, 2]) / dirs[down, 2]
        ground = down & (t > 0)
        t[~ground] = np.inf
        if ground.any():
            rgb[ground] = self.ground(scene, origins[ground] + t[ground, None] * dirs[ground], t[ground])
        return rgb, t

    def ground(self, scene: Occluders, points: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Shaded, hazy colour (N, 3) of ground points (N, 3) seen from ``dist`` away."""
        parity = (np.floor(points[:, 0] / self.cell) + np.floor(points[:, 1] / self.cell)) % 2
        albedo = np.where(parity[:, None] > 0, [0.55, 0.47, 0.33], [0.34, 0.45, 0.26])
        # Far cells blend into their mean colour so the pattern is never finer than a pixel.
        fade = np.clip((dist - 5.0) / 12.0, 0.0, 1.0)[:, None]
        albedo = (1.0 - fade) * albedo + fade * np.array([0.445, 0.46, 0.295])
        light = scene.light_dir
        t_shadow, _, _ = scene.nearest_hit(points + np.array([0.0, 0.0, 1e-6]), np.broadcast_to(light, points.shape))
        lit = np.isinf(t_shadow) * max(float(light[2]), 0.0)
        shaded = albedo * (0.4 + 0.6 * lit)[:, None]
        haze = (1.0 - np.exp(-dist / self.haze_distance))[:, None]
        return (1.0 - haze) * shaded + haze * HORIZON

    def sky(self, dirs: np.ndarray) -> np.ndarray:
        """Colour (N, 3) of the sky and the mountains on the horizon along ``dirs``."""
        up = np.clip(dirs[:, 2], 0.0, 1.0)[:, None]
        rgb = (1.0 - up ** 0.6) * HORIZON + up ** 0.6 * ZENITH
        azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
        ridge = 0.07 + 0.035 * np.sin(3.0 * azimuth + 0.5) + 0.02 * np.sin(7.0 * azimuth + 2.0)
        mountain = dirs[:, 2] < ridge
        shade = np.clip(dirs[:, 2] / 0.12, 0.0, 1.0)[:, None]
        rgb[mountain] = ((1.0 - 0.5 * shade) * MOUNTAIN + 0.5 * shade * HORIZON)[mountain]
        return rgb
