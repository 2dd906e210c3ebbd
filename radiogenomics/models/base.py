"""The base of the AnnData-facing models: config, metadata, fingerprint, save/load, cohort checks.

A model class registers itself by subclassing with a name (`class GeneGAN(CohortModel,
kind="gene_gan")`): the name is the config's `model` value and what a run folder's `model.json`
records, so `load_model(run_dir)` finds the class without class names as strings.

A run folder holds `model.safetensors` (the modules of `_modules()`), `model.json` (metadata:
genes, scaler, covariates, geometry, the held-out patients, the training summary),
`config.yaml` (the resolved config) and whatever `_save_extra` adds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import ClassVar

import anndata as ad
import numpy as np
import torch

from radiogenomics import _keys as K
from radiogenomics._atomic import atomic_write_text
from radiogenomics.config import Config, dump_config, load_config, save_config
from radiogenomics.data.scaling import GeneScaler
from radiogenomics.data.split import model_split
from radiogenomics.data.view import CohortView
from radiogenomics.train.checkpoint import load_weights, save_weights
from radiogenomics.train.loop import pick_device

log = logging.getLogger(__name__)

# config keys that may change between a run and its resume: learning rates are applied to the
# resumed optimisers; the steps are how a finished run is extended; the CohortDataset settings
# (augment, cache_rate) do not reach the models; gene.select_samples only sizes the
# selection score's synthetic side
IGNORED = {"lr", "steps", "augment", "cache_rate", "select_samples"}

META = "model.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
_MAX_LISTED = 10


class CohortModel:
    """What GeneGAN, ImageGAN and the Segmenter share (see the module docstring).

    Subclasses implement `_build(cfg, meta)` (the networks), `_set_data(adata)` (training
    tensors from a `CohortView`), `_modules()` (what is saved), `train` and `sample`.
    """

    kind: ClassVar[str] = ""
    # what a model of the class makes, which callers (the CLI) ask instead of its kind
    draws_expression: ClassVar[bool] = False  # new patients' expression, from noise
    makes_images: ClassVar[bool] = False  # lesion images (and masks) from genes
    FORMAT: ClassVar[int] = 1  # raised when the networks change, so old runs are refused
    registry: ClassVar[dict[str, type[CohortModel]]] = {}

    def __init_subclass__(cls, kind: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind = kind
            CohortModel.registry[kind] = cls

    # ---------------------------------------------------------------------------------------
    # construction

    @staticmethod
    def _config(config: Config | None) -> Config:
        return copy.deepcopy(config) if config is not None else Config()

    def _setup(self, cfg: Config, meta: dict) -> None:
        """Common state, then the subclass's networks (seeded, the user's RNG untouched)."""
        self.config, self.meta = cfg, meta
        self.genes: list[str] = list(meta.get("genes", []))
        self.scaler = GeneScaler.from_dict(meta["scaler"]) if meta.get("scaler") else None
        self.device = pick_device(cfg.device)
        self.trained = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self._build(cfg, meta)

    def _build(self, cfg: Config, meta: dict) -> None:
        raise NotImplementedError

    def _set_data(self, adata: ad.AnnData) -> None:
        raise NotImplementedError

    def _modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        """Train on the cohort's training patients, keeping the weights best on the held-out
        ones (the cohort's one split). Subclasses implement it; `inspect.getdoc` and `help`
        show this text for theirs.

        Parameters
        ----------
        run_dir : str or Path, optional
            Where to checkpoint (atomically; a killed run resumes from its last checkpoint),
            log (`log.csv`) and save the model; None trains in memory.
        progress : bool
            Show a progress bar.

        Returns
        -------
        dict
            The training summary (steps, best step and score, resumed_from, ...), also kept in
            `model.meta["summary"]`.

        Examples
        --------
        >>> summary = model.train(run_dir="run", progress=False)  # doctest: +SKIP
        >>> summary["best_step"]  # doctest: +SKIP
        1200
        """
        raise NotImplementedError

    def _view(self, adata: ad.AnnData, *, covariates: list[str] | None = None) -> CohortView:
        """The cohort as this model sees it: its genes standardised with the cohort's shared
        scaler (the model's own once it has one, so a loaded model sees its training scale)."""
        view = CohortView(
            adata,
            genes=self.genes,
            covariates=covariates,
            log1p=self.config.gene.log1p,
            scaler=self.scaler,
        )
        if self.scaler is None and view.scaler is not None:
            self.scaler = view.scaler
            self.meta["scaler"] = view.scaler.to_dict()
        return view

    def _split(self, view: CohortView, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, held-out rows) among `rows`: the cohort's one split (data.split), so
        every model of the cohort and seed holds out the same patients; the held-out ids go
        into the metadata."""
        train, val = model_split(view.adata.obs, rows, self.config.train, self.config.seed)
        self.meta["held_out"] = [str(p) for p in view.ids[val]]
        return train, val

    def _fingerprint_of(self, view: CohortView, train_rows, val_rows, **sections) -> dict:
        """What a resumed run must match: the patients on each side, the genes and their
        scaler, the seed and the config sections that shape the networks (less their
        learning rates, which a resumed run may change, and what `IGNORED` lists)."""
        out = {
            "model": self.kind,
            "train_patients": view.digest(train_rows),
            "held_out": view.digest(val_rows),
            "genes": self.genes,
            "scaler": None if self.scaler is None else _digest(self.scaler.to_dict()),
            "seed": self.config.seed,
        }
        slice_axis = view.adata.uns.get(K.UNS, {}).get(K.SLICE_AXIS)
        if slice_axis is not None:  # the same patients with one image or every slice differ
            out["slice_axis"] = int(slice_axis)
        for name, section in sections.items():
            if dataclasses.is_dataclass(section):
                section = {k: v for k, v in dataclasses.asdict(section).items() if k not in IGNORED}
            out[name] = section
        return out

    # ---------------------------------------------------------------------------------------
    # save and load

    def save(self, run_dir: str | Path) -> Path:
        """Weights, metadata and the resolved config into `run_dir`, each written atomically.

        Parameters
        ----------
        run_dir : str or Path
            The run folder (created where missing).

        Returns
        -------
        Path
            `run_dir`.

        Examples
        --------
        >>> model.save("run")  # doctest: +SKIP
        PosixPath('run')
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(run_dir / WEIGHTS, {k: m.state_dict() for k, m in self._modules().items()})
        meta = {**self.meta, "model": self.kind, "format": self.FORMAT, "trained": self.trained}
        atomic_write_text(run_dir / META, json.dumps(meta, indent=1))
        save_config(self.config, run_dir / CONFIG)
        self._save_extra(run_dir)
        log.info("saved %s to %s", self.kind, run_dir)
        return run_dir

    def _save_extra(self, run_dir: Path) -> None:
        """Files beside the weights (a subclass's own)."""

    def _load_extra(self, run_dir: Path) -> None:
        """Read what `_save_extra` wrote."""

    @classmethod
    def load(cls, run_dir: str | Path, adata: ad.AnnData | None = None):
        """A saved model.

        Parameters
        ----------
        run_dir : str or Path
            A run folder the library wrote (`save`, `train(run_dir=...)`).
        adata : AnnData, optional
            A cohort to attach: refused unless it fits the model (genes, covariates,
            geometry); the model then holds its data, to train on (resume with) it, to draw
            an image model's profiles from, or to evaluate on.

        Returns
        -------
        CohortModel
            The model, of the class its run recorded when called on `CohortModel`.

        Examples
        --------
        >>> model = JointGAN.load("run")  # doctest: +SKIP
        >>> model.trained  # doctest: +SKIP
        True
        """
        run_dir = Path(run_dir)
        meta = read_meta(run_dir)
        if cls is CohortModel:
            cls = _registered(meta, run_dir)
        elif meta.get("model") != cls.kind:
            raise ValueError(
                f"{run_dir} holds a {meta.get('model')!r} model, not a {cls.kind!r} one"
            )
        if meta.get("format") != cls.FORMAT:
            raise ValueError(
                f"{run_dir} was saved by a {cls.kind} of format {meta.get('format')}, whose "
                f"networks differ from this version's (format {cls.FORMAT}): retrain"
            )
        try:
            config = load_config(run_dir / CONFIG)
        except ValueError as err:
            raise ValueError(
                f"{run_dir / CONFIG} no longer validates ({err}): the run was saved by an "
                "earlier version of the library; retrain it"
            ) from None
        model = cls.__new__(cls)
        model._setup(config, meta)
        weights = load_weights(run_dir / WEIGHTS)
        for name, module in model._modules().items():
            if name not in weights:
                raise ValueError(f"{run_dir / WEIGHTS} has no weights for '{name}'")
            try:
                module.load_state_dict(weights[name])
            except RuntimeError as err:
                raise ValueError(
                    f"{run_dir / WEIGHTS}: the '{name}' weights do not fit the network its "
                    f"config.yaml describes ({str(err).splitlines()[0]})"
                ) from None
            module.to(model.device)
        model.trained = bool(meta.get("trained"))
        model._load_extra(run_dir)
        model._loaded()
        if adata is not None:
            model.check_cohort(adata)
            model._set_data(adata)
        return model

    def _loaded(self) -> None:
        """After the weights are in (e.g. put the sampler in eval mode)."""

    # ---------------------------------------------------------------------------------------
    # cohort checks

    def check_cohort(self, adata: ad.AnnData) -> None:
        """ValueError unless `adata` has this model's genes, covariate vocabularies and (for
        image models) spatial dims."""
        rg = adata.uns.get(K.UNS, {})
        dims = self.meta.get("spatial_dims")
        # a cohort without images (a gene model's sample) has no geometry to disagree with
        has_images = K.HAS_IMAGE in adata.obs and adata.obs[K.HAS_IMAGE].astype(bool).any()
        if dims is not None and has_images and int(rg.get(K.SPATIAL_DIMS, 2)) != int(dims):
            raise ValueError(
                f"the cohort has spatial_dims={rg.get(K.SPATIAL_DIMS, 2)} (images "
                f"{list(rg.get(K.IMAGE_SIZE, []))}); the model is {dims}D "
                f"({self.meta.get('image_size')})"
            )
        missing = [g for g in self.genes if g not in adata.var_names]
        if missing:
            raise ValueError(
                f"the cohort lacks {len(missing)} of the model's {len(self.genes)} genes: "
                f"{missing[:_MAX_LISTED]}"
            )
        cov = rg.get(K.COVARIATES, {})
        for key, vocab in self.meta.get("categorical", {}).items():
            theirs = [str(v) for v in cov.get(K.CATEGORICAL, {}).get(key, [])]
            if theirs != vocab:
                raise ValueError(
                    f"covariate '{key}': the cohort's categories {theirs} differ from the "
                    f"model's {vocab}"
                )
        for key in self.meta.get("numeric", {}):
            if key not in cov.get(K.NUMERIC, {}):
                raise ValueError(f"numeric covariate '{key}' of the model is not in the cohort")

    @property
    def samples_need_cohort(self) -> bool:
        """Whether `sample` draws from the cohort the model was loaded with (an image model's
        expression profiles or masks); such a model is loaded with `load(run_dir, adata)`."""
        return False

    # ---------------------------------------------------------------------------------------
    # the sampling surface (docs/design.md, section 3): `sample(n, covariates=None, seed=0)`, which a
    # sampling model implements; `iter_sample` and `generate_for` default to these

    def iter_sample(self, n: int, covariates=None, *, seed: int = 0, batch_size: int = 256):
        """`sample(n, covariates, seed=seed)` as batches of SyntheticCohorts (one batch here;
        a model that samples many patients splits them so that `n` may exceed memory)."""
        yield self.sample(n, covariates, seed=seed)

    def generate_for(self, adata: ad.AnnData, *, seed: int = 0):
        """Images for given patients: a model without an image side makes none."""
        raise ValueError(f"a {type(self).__name__} makes no images: generate_for needs an image "
                         "model (ImageGAN, JointGAN)")  # fmt: skip

    @property
    def held_out(self) -> list[str]:
        """Ids of the patients held out from training (the cohort's one split)."""
        return list(self.meta.get("held_out", []))

    def describe(self) -> str:
        return dump_config(self.config)


def _digest(value) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def read_meta(run_dir: Path) -> dict:
    path = Path(run_dir) / META
    if not Path(run_dir).exists():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        old = sorted(p.name for p in Path(run_dir).glob("*.json")) if Path(run_dir).is_dir() else []
        hint = f" (it has {old}: saved by an earlier version? retrain)" if old else ""
        raise FileNotFoundError(f"{run_dir} holds no trained model: {META} not found{hint}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); is it truncated?") from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise ValueError(f"{path} is no radiogenomics model description (no 'model' key)")
    return meta


def _registered(meta: dict, run_dir: Path) -> type[CohortModel]:
    # importing this module ran radiogenomics/models/__init__, which imports (and so
    # registers) every model class
    kind = meta.get("model")
    if kind not in CohortModel.registry:
        raise ValueError(
            f"{run_dir / META} names model {kind!r}; known: {sorted(CohortModel.registry)}"
        )
    return CohortModel.registry[kind]


def model_class(run_dir: str | Path) -> type[CohortModel]:
    """The class of the model saved in `run_dir` (read from its model.json, no weights)."""
    return _registered(read_meta(Path(run_dir)), Path(run_dir))


def load_model(run_dir: str | Path, adata: ad.AnnData | None = None) -> CohortModel:
    """The model saved in `run_dir`, whatever its class."""
    return CohortModel.load(run_dir, adata)
