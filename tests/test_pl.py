"""Plots: drawn without pyplot, so the library never changes the user's matplotlib backend."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
from matplotlib.figure import Figure

from radiogenomics import pl


def test_import_and_plotting_keep_the_users_backend(tmp_path):
    # svg is a non-interactive backend other than Agg, so the check runs headless
    code = (
        "import matplotlib, radiogenomics, radiogenomics.pl, radiogenomics.cli, "
        "radiogenomics.evaluate.report\n"
        "import pandas as pd\n"
        "pd.DataFrame({'step': [1, 2], 'critic': [0.5, 0.2]}).to_csv('log.csv', index=False)\n"
        "radiogenomics.pl.loss_curves('log.csv', save='curves.png')\n"
        "print(matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().lower() == "svg"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_loss_curves_returns_a_figure(tmp_path):
    pd.DataFrame({"step": [1, 2, 3], "critic": [1.0, 0.5, 0.2], "gp": [0.1, 0.1, 0.0]}).to_csv(
        tmp_path / "log.csv", index=False
    )
    fig = pl.loss_curves(tmp_path / "log.csv", save=tmp_path / "curves.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert (tmp_path / "curves.png").stat().st_size > 1000
