"""Process-wide runtime settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SETTING = """
import sys
from kilonerf.runtime import reuse_freed_memory
print(reuse_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_reuse_freed_memory_is_accepted_by_glibc() -> None:
    # In a child process: the setting is process-wide.
    out = subprocess.run([sys.executable, "-c", _SETTING], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
