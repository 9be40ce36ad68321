"""``python -m kilonerf``: the ``kilonerf`` command (what ``torchrun -m kilonerf`` and
``kilonerf train --nproc N`` start in every process)."""

import os
import sys

if int(os.environ.get("RANK", "0")) > 0:
    # Rank 0 alone shows progress and messages; set before tqdm is imported (it reads it then).
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.stdout = open(os.devnull, "w")

from kilonerf.cli import main  # noqa: E402

sys.exit(main())
