"""A run folder: its layout (:class:`RunDir`), the stages chained over it (``pipeline``) and
its trained models loaded for rendering (``models``)."""

from kilonerf.run.folder import RunDir

__all__ = ["RunDir"]
