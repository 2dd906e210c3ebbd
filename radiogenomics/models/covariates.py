"""Covariate conditioning shared by the models that sample patients (GeneGAN, JointGAN): the
covariate vocabularies, the training patients' covariate rows that `sample` draws from (their
joint distribution), and that table saved beside the weights.

A subclass sets `self.categorical`, `self.numeric` (in `_build`) and `self._covariate_table`
(the covariate columns of the patients it may draw from) before sampling.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from radiogenomics._atomic import atomic_write_text
from radiogenomics.data.view import encode_covariates

log = logging.getLogger(__name__)

COVARIATE_TABLE = "covariates.json"


class CovariateSampler:
    """Mixin: `covariates`, `covariates_for(n, covariates, seed)` and the saved table."""

    categorical: dict[str, list[str]]
    numeric: dict[str, dict]
    _covariate_table: pd.DataFrame

    @property
    def covariates(self) -> list[str]:
        return list(self.categorical) + list(self.numeric)

    def encode_covariates(self, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Covariate columns -> (codes (n, n_cat) int64, standardised numeric (n, n_num))."""
        return encode_covariates(obs, self.categorical, self.numeric)

    def covariates_for(
        self, n: int | None = None, covariates: dict | pd.DataFrame | None = None, seed: int = 0
    ) -> pd.DataFrame:
        """The covariate rows `sample` conditions on.

        A DataFrame is used as it is. Otherwise `n` rows are drawn from the training patients'
        covariate rows (their joint distribution), among those matching the categorical values
        fixed in `covariates`; the fixed values then overwrite their columns.
        """
        if isinstance(covariates, pd.DataFrame):
            obs = covariates.copy()
            self.encode_covariates(obs)  # validates
            return obs
        if n is None or n < 1:
            raise ValueError(f"n must be a positive number of patients; got {n}")
        fixed = dict(covariates or {})
        unknown = [k for k in fixed if k not in self.covariates]
        if unknown:
            raise ValueError(
                f"unknown covariate(s) {unknown}; the model is conditioned on {self.covariates}"
            )
        table = self._covariate_table
        pool = table
        for key, value in fixed.items():
            if key in self.categorical:
                if str(value) not in self.categorical[key]:
                    raise ValueError(
                        f"covariate '{key}' has no category {value!r}; the model's categories "
                        f"are {self.categorical[key]}"
                    )
                pool = pool[pool[key].astype(str) == str(value)]
        if len(pool) == 0:
            log.warning("no training patient has %s; other covariates drawn from all", fixed)
            pool = table
        rng = np.random.default_rng(seed)
        obs = pool.iloc[rng.integers(0, len(pool), size=n)].copy()
        for key, value in fixed.items():
            if key in self.numeric:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"numeric covariate '{key}' needs a number; got {value!r}"
                    ) from None
                obs[key] = value
            else:
                obs[key] = str(value)
        obs.index = [f"synthetic-{i:06d}" for i in range(n)]
        for key, vocab in self.categorical.items():
            obs[key] = pd.Categorical(obs[key].astype(str), categories=vocab)
        return obs

    def _save_extra(self, run_dir: Path) -> None:
        # the covariate rows (no ids) of the patients with expression, held-out ones too, that
        # sampling draws from; JSON keeps categories
        # such as "NA" as text and floats exact, which a CSV round trip does not
        table = {k: [str(v) for v in self._covariate_table[k]] for k in self.categorical} | {
            k: [float(v) for v in self._covariate_table[k]] for k in self.numeric
        }
        atomic_write_text(run_dir / COVARIATE_TABLE, json.dumps(table))

    def _load_extra(self, run_dir: Path) -> None:
        path = run_dir / COVARIATE_TABLE
        try:
            table = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: the run folder is incomplete") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); is it truncated?") from None
        self._covariate_table = pd.DataFrame(table, columns=self.covariates)
