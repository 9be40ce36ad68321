"""Choosing the preview resolution that keeps a moving camera at the target frame rate."""

from __future__ import annotations

import math


class PreviewSizer:
    """Per model, the height of the reduced-resolution frames rendered while the camera moves.

    After each preview the height is scaled by sqrt(budget / measured time) (render time
    grows about linearly with the pixel count, i.e. with height squared), limited to a
    factor of 1.4 per frame so that one unusually slow or fast view does not make the
    resolution jump. Measuring instead of predicting means a faster backend or machine
    raises the preview resolution by itself.
    """

    def __init__(self, budget_s: float = 0.06, start_height: int = 48, min_height: int = 16) -> None:
        self.budget_s, self.start_height, self.min_height = budget_s, start_height, min_height
        self._height: dict[str, float] = {}

    def height(self, model: str, full_height: int) -> int:
        """Preview height in pixels for ``model``, at most ``full_height``."""
        h = self._height.get(model, float(self.start_height))
        return max(1, min(full_height, max(self.min_height, int(round(h)))))

    def record(self, model: str, height: int, seconds: float) -> None:
        """Update ``model``'s preview height after a preview of ``height`` pixels took ``seconds``."""
        scale = math.sqrt(self.budget_s / max(seconds, 1e-4))
        new = height * min(1.4, max(1.0 / 1.4, scale))
        # Never drop below the floor, so a slow model stays visible rather than vanishing.
        self._height[model] = max(float(self.min_height), new)
