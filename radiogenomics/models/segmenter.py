"""Segmenter: the lesion segmentation U-Net (radiogenomics.nn.segmentation) on a cohort AnnData.

    seg = Segmenter(adata, config)          # patients with an image and a mask; held-out split
    seg.train(run_dir="run")                # resumable; keeps the weights best on held-out Dice
    seg.evaluate()                          # Dice/IoU on the held-out patients
    masks = seg.predict(adata)              # (N, 1, *spatial) uint8 for every image patient
    probs = seg.predict_tensor(images)      # synthetic images in [-1, 1] -> probabilities
    completed = seg.write_masks(adata, "masks")   # masks for image patients that lack one
    seg.save("run"); Segmenter.load("run", adata)

Patients are split at the patient level (`segment.val_fraction`, seeded by `seed`): the held-out
ones are those `split_cohort` gives for the mask patients with the same fraction and seed.
Images are held in memory (`load_images`), augmented on the tensors with a seeded
torch.Generator: a random flip along every spatial axis and a small intensity scale and shift.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from radiogenomics import _keys as K
from radiogenomics.config import Config, dump_config, save_config
from radiogenomics.data.cohort import cohort_root, resolve, split_cohort
from radiogenomics.data.dataset import image_rows, load_images
from radiogenomics.data.io import FORMATS, atomic_write, atomic_write_text, load_image, save_image
from radiogenomics.nn.segmentation import SegmentationNet
from radiogenomics.train.checkpoint import (
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from radiogenomics.train.loop import pick_device

log = logging.getLogger(__name__)

META = "segmenter.json"
WEIGHTS = "segmenter.safetensors"
CHECKPOINT = "segmenter_checkpoint"
LOG = "segmenter_log.csv"
_CHUNK = 256  # patients loaded at once by predict/evaluate/write_masks
_MAX_LISTED = 10


def _shape(channels, size) -> str:
    return "(" + ", ".join(str(v) for v in [channels if channels is not None else "C", *size]) + ")"


def cohort_geometry(adata: ad.AnnData, data) -> dict:
    """spatial_dims, image_size (after `data.image_size`) and channels of the cohort's images,
    checked against the config section `data`; mismatches show both shapes."""
    rg = adata.uns.get(K.UNS, {})
    dims = int(rg.get(K.SPATIAL_DIMS, 2))
    native = [int(v) for v in rg.get(K.IMAGE_SIZE, [])]
    channels = rg.get(K.CHANNELS)
    if dims != data.spatial_dims:
        ours = data.image_size or ["*"] * data.spatial_dims
        raise ValueError(
            f"config data.spatial_dims={data.spatial_dims} (images {_shape(data.channels, ours)}) "
            f"but the cohort has spatial_dims={dims} (images {_shape(channels, native)}); "
            f"set data.spatial_dims={dims}"
        )
    size = [int(v) for v in (data.image_size or native)]
    if len(size) != dims or channels is None:
        raise ValueError(
            "the cohort has no uns['rg']['image_size'] or ['channels']; validate it with "
            "validate_cohort (or set data.image_size and data.channels)"
        )
    if data.channels is not None and data.channels != int(channels):
        raise ValueError(
            f"config data.channels={data.channels} but the cohort's images are "
            f"{_shape(channels, native)}"
        )
    return {"spatial_dims": dims, "image_size": size, "channels": int(channels)}


class Segmenter:
    """Lesion segmentation on a cohort (see the module docstring)."""

    def __init__(self, adata: ad.AnnData, config: Config | None = None, *, progress: bool = True):
        cfg = copy.deepcopy(config) if config is not None else Config()
        geometry = cohort_geometry(adata, cfg.data)
        self._build(cfg, {**geometry, "val_patients": [], "n_train": 0, "summary": {}})
        self._set_data(adata, progress=progress)

    def _build(self, cfg: Config, meta: dict) -> None:
        self.config, self.meta = cfg, meta
        self.spatial_dims: int = int(meta["spatial_dims"])
        self.image_size: list[int] = [int(v) for v in meta["image_size"]]
        self.channels: int = int(meta["channels"])
        s = cfg.segment
        divisor = math.prod(s.strides)
        if any(v % divisor for v in self.image_size):
            raise ValueError(
                f"key 'segment.strides' {s.strides} downsample by {divisor}, which does not "
                f"divide the image size {self.image_size}; set data.image_size to multiples of "
                f"{divisor} or use fewer strides"
            )
        self.device = pick_device(cfg.device)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, user's RNG untouched
            torch.manual_seed(cfg.seed)
            self.net = SegmentationNet(
                self.spatial_dims,
                self.channels,
                1,
                channels=s.channels,
                strides=s.strides,
                num_res_units=s.num_res_units,
                dropout=s.dropout,
            )
        self.net.to(self.device).eval()
        if self._cuda:
            self.net.to(memory_format=self._memory_format)
        self.trained = False

    def _set_data(self, adata: ad.AnnData, *, progress: bool = False) -> None:
        """Images and masks of the patients with both, the patient-level split, and the
        fingerprint a resumed run must match."""
        try:
            rows = image_rows(adata, need_mask=True)
        except ValueError as err:
            raise ValueError(
                f"{err}: a Segmenter trains on patients with a mask (obs['{K.MASK}'], "
                f"has_mask); predict masks with a trained one instead"
            ) from None
        ids = [str(p) for p in adata.obs_names[rows]]
        self._ids = np.asarray(ids, dtype=object)
        self._train, self._val = _split_patients(
            ids, self.config.segment.val_fraction, self.config.seed
        )
        self._images, self._masks = load_images(adata, self.config.data, rows, progress=progress)
        self.meta.update(val_patients=self.val_patients, n_train=len(self._train))
        d, s = self.config.data, dataclasses.asdict(self.config.segment)
        s.pop("steps")  # raising the steps is how a finished run is extended
        digest = lambda pos: hashlib.sha256("\n".join(self._ids[pos]).encode()).hexdigest()  # noqa: E731
        self._fingerprint = {
            "train_patients": digest(self._train),
            "val_patients": digest(self._val),
            "segment": s,
            "image": [self.channels, *self.image_size],
            "intensity": [d.intensity, list(d.percentiles), d.a_min, d.a_max],
            "seed": self.config.seed,
        }

    @property
    def val_patients(self) -> list[str]:
        """Ids of the held-out patients (empty for a model loaded without a cohort: see meta)."""
        if hasattr(self, "_ids"):
            return [str(p) for p in self._ids[self._val]]
        return list(self.meta.get("val_patients", []))

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def _memory_format(self):
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def _autocast(self):
        on = self._cuda and self.config.train.amp
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self._memory_format) if self._cuda else x

    # ---------------------------------------------------------------------------------------
    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        """Train for `segment.steps` batches (Adam, DiceCE loss on the logits); with `run_dir`,
        checkpoint at every evaluation, resume from a checkpoint there, write the CSV log and
        save the model. Ends with the weights best on held-out Dice (the last ones without
        held-out patients). A run started without `run_dir` always starts at step 0."""
        from monai.losses import DiceCELoss

        if not hasattr(self, "_images"):
            raise ValueError(
                "this Segmenter was loaded without a cohort; Segmenter.load(dir, adata)"
            )
        cfg, s, device, net = self.config, self.config.segment, self.device, self.net
        run_dir = None if run_dir is None else Path(run_dir)
        images, masks = self._images.to(device), self._masks.to(device)
        train_pos = torch.as_tensor(self._train, device=device)
        loss_fn = DiceCELoss(sigmoid=True)
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        rng = torch.Generator().manual_seed(cfg.seed)
        run = {"step": 0, "history": [], "best": {"dice": -math.inf, "iou": None, "step": None}}
        best_state = None
        cuda_devices = []
        if self._cuda:
            cuda_devices = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.random.fork_rng(devices=cuda_devices):  # dropout's RNG, seeded and resumable
            torch.manual_seed(cfg.seed)
            found = load_checkpoint(run_dir / CHECKPOINT) if run_dir is not None else None
            if found is not None:
                best_state = self._resume(found, opt, rng, run, run_dir)
            bar = tqdm(total=s.steps, initial=run["step"], desc="segmenter", disable=not progress)
            net.train()
            while run["step"] < s.steps:
                x, y = self._batch(images, masks, train_pos, rng)
                with self._autocast():
                    logits = net(x)
                loss = loss_fn(logits.float(), y)  # the loss in fp32 under bf16 autocast
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                run["step"] += 1
                row = dict(step=run["step"], loss=loss.item(), val_dice=math.nan, val_iou=math.nan)
                run["history"].append(row)
                if not math.isfinite(row["loss"]):
                    raise FloatingPointError(
                        f"segmenter training diverged at step {run['step']} (loss {row['loss']}); "
                        "lower segment.lr"
                    )
                bar.update(1)
                if run["step"] % s.eval_every and run["step"] < s.steps:
                    continue
                if len(self._val):
                    row["val_dice"], row["val_iou"] = self._held_out_scores()
                    if row["val_dice"] > run["best"]["dice"]:
                        best = {"dice": row["val_dice"], "iou": row["val_iou"], "step": run["step"]}
                        run["best"], best_state = best, copy.deepcopy(net.state_dict())
                    bar.set_postfix(loss=f"{row['loss']:.3f}", dice=f"{row['val_dice']:.3f}")
                self._checkpoint(run_dir, opt, rng, run, best_state, cuda_devices)
            bar.close()
        net.eval()
        if best_state is not None:
            net.load_state_dict(best_state)
        self.trained = True
        best = run["best"]
        summary = {
            "steps": run["step"],
            "best_step": best["step"],
            "best_val_dice": None if best["step"] is None else best["dice"],
            "best_val_iou": best["iou"],
            "n_train": len(self._train),
            "n_val": len(self._val),
        }
        self.meta["summary"] = summary
        self.history = pd.DataFrame(run["history"], columns=["step", "loss", "val_dice", "val_iou"])
        if run_dir is not None:
            self._write_log(run_dir, run["history"])
            self.save(run_dir)
        log.info("segmenter: %s", summary)
        return summary

    def _held_out_scores(self) -> tuple[float, float]:
        """Mean Dice and IoU on the held-out patients (the net in eval mode, then back)."""
        probs = self._probabilities(self._images[self._val])
        dice, iou = self._scores(probs, self._masks[self._val], self.config.segment.threshold)
        return float(dice.mean()), float(iou.mean())

    def _batch(self, images, masks, train_pos, rng):
        """A random batch of training patients with flips and intensity jitter, drawn with `rng`
        (CPU) and applied on the device: (B, C, *spatial), (B, 1, *spatial)."""
        s, dims = self.config.segment, self.spatial_dims
        idx = train_pos[
            torch.randint(len(train_pos), (s.batch_size,), generator=rng).to(self.device)
        ]
        x, y = images[idx], masks[idx]
        B = x.shape[0]
        flips = torch.rand(dims, B, generator=rng).to(self.device) < 0.5
        per_sample = (B,) + (1,) * (dims + 1)  # broadcast over (C, *spatial)
        for axis in range(dims):
            flip = flips[axis].view(per_sample)
            x = torch.where(flip, x.flip(2 + axis), x)
            y = torch.where(flip, y.flip(2 + axis), y)
        scale = 1 + 0.1 * (2 * torch.rand(B, generator=rng) - 1)
        shift = 0.1 * (2 * torch.rand(B, generator=rng) - 1)
        x = x * scale.to(self.device).view(per_sample) + shift.to(self.device).view(per_sample)
        return self._to_device(x), y

    def _checkpoint(self, run_dir, opt, rng, run, best_state, cuda_devices) -> None:
        if run_dir is None:
            return
        modules = {"net": self.net.state_dict()}
        if best_state is not None:
            modules["best"] = best_state
        state = {
            "step": run["step"],
            "history": run["history"],
            "best": run["best"],
            "optimizer": opt.state_dict(),
            "rng": rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "fingerprint": json.dumps(self._fingerprint, sort_keys=True),
        }
        if cuda_devices:
            state["cuda_rng"] = torch.cuda.get_rng_state(cuda_devices[0])
        save_checkpoint(run_dir / CHECKPOINT, modules, state)
        self._write_log(run_dir, run["history"])

    def _resume(self, found, opt, rng, run, run_dir):
        modules, state = found
        theirs = json.loads(state.get("fingerprint", "{}"))
        for key in sorted(set(theirs) | set(self._fingerprint)):
            if theirs.get(key) != self._fingerprint.get(key):
                raise ValueError(
                    f"{run_dir} holds a segmenter checkpoint of another run: its '{key}' "
                    f"differs ({_short(theirs.get(key))} there, {_short(self._fingerprint.get(key))}"
                    " here); use a new run folder or delete that one"
                )
        self.net.load_state_dict(modules["net"])
        opt.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self._cuda:
            index = self.device.index
            torch.cuda.set_rng_state(
                state["cuda_rng"], torch.cuda.current_device() if index is None else index
            )
        run.update(
            step=int(state["step"]), history=list(state["history"]), best=dict(state["best"])
        )
        log.info("segmenter resumes at step %d from %s", run["step"], run_dir / CHECKPOINT)
        return modules.get("best")

    @staticmethod
    def _write_log(run_dir: Path, history: list[dict]) -> Path:
        frame = pd.DataFrame(history, columns=["step", "loss", "val_dice", "val_iou"])
        return atomic_write(Path(run_dir) / LOG, lambda tmp: frame.to_csv(tmp, index=False))

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) -> (N, 1, *spatial) float32 foreground probabilities, on the CPU."""
        was_training = self.net.training
        self.net.eval()
        out = []
        for start in range(0, len(images), max(self.config.segment.batch_size, 32)):
            x = self._to_device(images[start : start + max(self.config.segment.batch_size, 32)])
            with self._autocast():
                logits = self.net(x)
            out.append(torch.sigmoid(logits.float()).cpu())
        self.net.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, 1, *self.image_size)

    def predict_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities `(N, 1, *spatial)` of images `(N, C, *spatial)` in [-1, 1]
        (e.g. a generator's output), on the images' device, without gradients. Threshold at
        `segment.threshold` and compare with the masks the images were generated from."""
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"predict_tensor takes a torch.Tensor; got {type(images).__name__}")
        self.net.check_input(images)
        return self._probabilities(images.detach().float()).to(images.device)

    @staticmethod
    def _scores(probs: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5):
        """Per-patient Dice and IoU (MONAI metrics; an empty mask predicted empty scores 1)."""
        from monai.metrics import DiceMetric, MeanIoU

        pred = (probs > threshold).float()
        masks = masks.float()
        dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
            pred, masks
        )
        iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(pred, masks)
        return dice[:, 0].numpy().astype(np.float64), iou[:, 0].numpy().astype(np.float64)

    def evaluate(self, adata: ad.AnnData | None = None, rows=None) -> dict:
        """Dice and IoU, mean (`dice`, `iou`) and per patient (`dice_per_patient`,
        `iou_per_patient`: Series indexed by patient id), on the held-out patients, or on
        `adata`'s patients with an image and a mask (`rows`: their row numbers)."""
        threshold = self.config.segment.threshold
        if adata is None:
            if rows is not None:
                raise ValueError("rows need the cohort they index: evaluate(adata, rows)")
            if not hasattr(self, "_images"):
                raise ValueError(
                    "this Segmenter has no cohort; evaluate(adata) or load(dir, adata)"
                )
            if not len(self._val):
                raise ValueError("no held-out patients (segment.val_fraction=0); evaluate(adata)")
            ids = self._ids[self._val]
            dice, iou = self._scores(
                self._probabilities(self._images[self._val]), self._masks[self._val], threshold
            )
        else:
            self.check_cohort(adata)
            rows = (
                image_rows(adata, need_mask=True)
                if rows is None
                else self._check_rows(adata, rows, need_mask=True)
            )
            if not len(rows):
                raise ValueError("evaluate got no rows")
            ids = adata.obs_names[rows]
            dice, iou = [], []
            for start in range(0, len(rows), _CHUNK):
                images, masks = load_images(adata, self.config.data, rows[start : start + _CHUNK])
                d, i = self._scores(self._probabilities(images), masks, threshold)
                dice.append(d)
                iou.append(i)
            dice, iou = np.concatenate(dice), np.concatenate(iou)
        index = pd.Index([str(p) for p in ids], name="patient")
        return {
            "dice": float(dice.mean()),
            "iou": float(iou.mean()),
            "n": len(index),
            "dice_per_patient": pd.Series(dice, index=index, name="dice"),
            "iou_per_patient": pd.Series(iou, index=index, name="iou"),
        }

    def _check_rows(self, adata: ad.AnnData, rows, need_mask: bool) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= adata.n_obs):
            raise ValueError(
                f"rows must be row numbers in 0..{adata.n_obs - 1}; got {rows.tolist()[:_MAX_LISTED]}"
            )
        have = adata.obs[K.HAS_IMAGE].to_numpy(bool)[rows]
        if need_mask:
            have &= adata.obs[K.HAS_MASK].to_numpy(bool)[rows]
        if not have.all():
            bad = adata.obs_names[rows[~have]].tolist()
            what = "an image and a mask" if need_mask else "an image"
            raise ValueError(f"patient(s) {bad[:_MAX_LISTED]} have no {what}")
        return rows

    def predict(self, adata: ad.AnnData, rows=None) -> np.ndarray:
        """Predicted masks `(N, 1, *spatial)` uint8 in {0, 1} of `adata`'s patients with an
        image (with or without a mask), or of the rows `rows`, on the model's grid."""
        self.check_cohort(adata)
        rows = image_rows(adata) if rows is None else self._check_rows(adata, rows, need_mask=False)
        out = [np.zeros((0, 1, *self.image_size), np.uint8)]
        for start in range(0, len(rows), _CHUNK):
            out.append(self._predict_probs(adata, rows[start : start + _CHUNK]))
        return np.concatenate(out)

    def _predict_probs(self, adata, rows, as_mask: bool = True):
        images, _ = load_images(adata, self.config.data, rows)
        probs = self._probabilities(images)
        return (probs > self.config.segment.threshold).to(torch.uint8).numpy() if as_mask else probs

    def write_masks(
        self,
        adata: ad.AnnData,
        out_dir: str | Path,
        *,
        format: str = "nii.gz",
        progress: bool = True,
    ) -> ad.AnnData:
        """Predict masks for the image patients without one and write them to `out_dir`
        (`<patient id>.<format>`, atomically, at each image file's own spatial size: the
        probabilities are resized back before thresholding). Returns a copy of `adata` whose
        `obs['mask']` points at them and whose `has_mask` is True for them; the paths are
        relative to the cohort's root (uns['rg']['root'], else the working folder) when
        `out_dir` lies inside it, absolute otherwise. NIfTI masks get an identity affine."""
        self.check_cohort(adata)
        if format not in FORMATS or format == "dicom":
            raise ValueError(
                f"format must be one of {sorted(set(FORMATS) - {'dicom'})}; got {format!r}"
            )
        if format in ("png", "tif") and self.spatial_dims == 3:
            raise ValueError(f"format {format!r} holds 2D images only; use nii.gz or npy for 3D")
        out = adata.copy()
        has_mask = (
            out.obs[K.HAS_MASK].to_numpy(bool)
            if K.HAS_MASK in out.obs
            else np.zeros(out.n_obs, bool)
        )
        rows = np.flatnonzero(out.obs[K.HAS_IMAGE].to_numpy(bool) & ~has_mask)
        if not len(rows):
            log.info("every image patient has a mask; nothing to write")
            return out
        names = [re.sub(r"[^A-Za-z0-9._-]", "_", str(p)) for p in out.obs_names[rows]]
        if len(set(names)) < len(names):
            raise ValueError("patient ids collide once made file-safe; rename the patients")
        out_dir = Path(out_dir)
        root = cohort_root(out).resolve()
        inside = out_dir.resolve().is_relative_to(root)
        column = out.obs[K.MASK].astype(object).tolist() if K.MASK in out.obs else [""] * out.n_obs
        bar = tqdm(total=len(rows), desc="writing masks", disable=not progress)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            probs = self._predict_probs(out, chunk, as_mask=False)
            for k, (row, prob) in enumerate(zip(chunk, probs, strict=True)):
                native = load_image(
                    resolve(out, out.obs[K.IMAGE].iat[row]), self.spatial_dims
                ).shape[1:]
                if list(native) != self.image_size:  # (1, *model grid) -> (1, *native)
                    mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
                    prob = F.interpolate(
                        prob[None], size=list(native), mode=mode, align_corners=False
                    )[0]
                mask = (prob > self.config.segment.threshold).to(torch.uint8).numpy()
                path = out_dir / f"{names[start + k]}{FORMATS[format]}"
                save_image(mask, path)
                column[row] = (
                    os.path.relpath(path.resolve(), root) if inside else str(path.resolve())
                )
                bar.update(1)
        bar.close()
        out.obs[K.MASK] = pd.Series(column, index=out.obs_names, dtype=object)
        out.obs[K.HAS_MASK] = has_mask | np.isin(np.arange(out.n_obs), rows)
        log.info("wrote %d predicted masks to %s", len(rows), out_dir)
        return out

    # ---------------------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """`segmenter.safetensors`, `segmenter.json` (geometry, held-out ids, summary) and
        `config.yaml` in `run_dir`."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(run_dir / WEIGHTS, {"net": self.net.state_dict()})
        meta = {
            **self.meta,
            "val_patients": self.val_patients,
            "trained": self.trained,
            "model": "Segmenter",
        }
        atomic_write_text(run_dir / META, json.dumps(meta, indent=1))
        save_config(self.config, run_dir / "config.yaml")
        log.info("saved Segmenter to %s", run_dir)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, adata: ad.AnnData | None = None) -> Segmenter:
        """A saved Segmenter; with `adata`, refuse it unless its images fit, and take its
        patients (same split: same seed and fraction) so the model can evaluate or train on."""
        from radiogenomics.config import load_config

        run_dir = Path(run_dir)
        if not (run_dir / META).is_file():
            raise FileNotFoundError(f"{run_dir} holds no trained Segmenter ({META} not found)")
        meta = json.loads((run_dir / META).read_text())
        model = cls.__new__(cls)
        model._build(load_config(run_dir / "config.yaml"), meta)
        model.net.load_state_dict(load_weights(run_dir / WEIGHTS)["net"])
        model.trained = bool(meta.get("trained"))
        if adata is not None:
            saved = list(meta.get("val_patients", []))
            model.check_cohort(adata)
            if not adata.obs.get(K.HAS_MASK, pd.Series(False, index=adata.obs_names)).any():
                log.info("the cohort has no masks: the loaded Segmenter can predict, not train")
                return model
            model._set_data(adata)
            if model.val_patients != saved:
                log.warning(
                    "this cohort's held-out patients differ from the ones saved in %s", run_dir
                )
        return model

    def check_cohort(self, adata: ad.AnnData) -> None:
        """ValueError unless `adata`'s images fit the model: spatial_dims, channels and (unless
        the config resizes with data.image_size) image size; the message shows both shapes."""
        rg = adata.uns.get(K.UNS, {})
        dims = int(rg.get(K.SPATIAL_DIMS, 2))
        native = [int(v) for v in rg.get(K.IMAGE_SIZE, [])]
        channels = rg.get(K.CHANNELS)
        size_ok = self.config.data.image_size is not None or native == self.image_size
        if (
            dims != self.spatial_dims
            or channels is None
            or int(channels) != self.channels
            or not size_ok
        ):
            raise ValueError(
                f"the cohort's images are {_shape(channels, native)} (spatial_dims={dims}) but "
                f"this Segmenter takes {_shape(self.channels, self.image_size)} "
                f"(spatial_dims={self.spatial_dims})"
            )

    def __repr__(self) -> str:
        s = self.config.segment
        return (
            f"Segmenter({self.spatial_dims}D {_shape(self.channels, self.image_size)}, "
            f"channels={s.channels}, strides={s.strides}, trained={self.trained})"
        )

    def describe(self) -> str:
        return dump_config(self.config)


def _split_patients(ids: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions: `split_cohort`'s patient-level split of `ids`."""
    if fraction == 0:
        log.warning("no held-out patients (segment.val_fraction=0): keeping the last weights")
        return np.arange(len(ids)), np.array([], dtype=np.int64)
    if len(ids) < 2:
        raise ValueError(
            f"segment.val_fraction={fraction} needs >= 2 patients with masks; the cohort has {len(ids)}"
        )
    _, held_out = split_cohort(ad.AnnData(obs=pd.DataFrame(index=ids)), fraction, seed=seed)
    val = np.flatnonzero(np.isin(ids, held_out.obs_names))
    return np.setdiff1d(np.arange(len(ids)), val), val


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."
