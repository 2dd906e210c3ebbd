"""Segmenter: the lesion segmentation U-Net (radiogenomics.nn.segmentation) on a cohort AnnData.

    seg = Segmenter(adata, config)          # patients with an image and a mask; held-out split
    seg.train(run_dir="run")                # resumable; keeps the weights best on held-out Dice
    seg.evaluate()                          # Dice/IoU on the held-out patients
    masks = seg.predict(adata)              # (N, 1, *spatial) uint8 for every image patient
    probs = seg.predict_tensor(images)      # synthetic images in [-1, 1] -> probabilities
    completed = seg.write_masks(adata, "masks")   # masks for image patients that lack one
    seg.save("run"); Segmenter.load("run", adata)

Patients are held out by the cohort's one split (`train.val_fraction`, `train.stratify`,
`train.group`, seeded by `seed`): the same patients a GeneGAN or ImageGAN of the cohort holds out.
Images are held in memory (`load_images`), augmented on the tensors with a seeded
torch.Generator: a random flip along every spatial axis and a small intensity scale and shift.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from radiogenomics import _keys as K
from radiogenomics._device import to_device
from radiogenomics.config import Config
from radiogenomics.data.cohort import cohort_root, resolve
from radiogenomics.data.dataset import image_rows, load_images
from radiogenomics.data.folders import file_stems
from radiogenomics.data.io import FORMATS, load_image, save_image
from radiogenomics.models.base import CohortModel
from radiogenomics.models.data import ImageData
from radiogenomics.nn.segmentation import SegmentationNet
from radiogenomics.train import distributed as D
from radiogenomics.train.loop import LoopSettings, Trainer, autocast, supervised_step

log = logging.getLogger(__name__)

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
            f"config data.spatial_dims={data.spatial_dims} (images {_shape(data.in_channels, ours)}) "
            f"but the cohort has spatial_dims={dims} (images {_shape(channels, native)}); "
            f"set data.spatial_dims={dims}"
        )
    size = [int(v) for v in (data.image_size or native)]
    if len(size) != dims or channels is None:
        raise ValueError(
            "the cohort has no uns['rg']['image_size'] or ['channels']; validate it with "
            "validate_cohort (or set data.image_size and data.in_channels)"
        )
    if data.in_channels is not None and data.in_channels != int(channels):
        raise ValueError(
            f"config data.in_channels={data.in_channels} but the cohort's images are "
            f"{_shape(channels, native)}"
        )
    return {"spatial_dims": dims, "image_size": size, "channels": int(channels)}


class Segmenter(CohortModel, kind="segmentation"):
    """Lesion segmentation on a cohort (see the module docstring)."""

    def __init__(self, adata: ad.AnnData, config: Config | None = None, *, progress: bool = True):
        cfg = self._config(config)
        geometry = cohort_geometry(adata, cfg.data)
        self._setup(cfg, {**geometry, "genes": [], "n_train": 0, "summary": {}})
        self._set_data(adata, progress=progress)

    def _build(self, cfg: Config, meta: dict) -> None:
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
        if self._channels_last:
            self.net.to(memory_format=self._memory_format)

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def _loaded(self) -> None:
        self.net.eval()

    def _set_data(self, adata: ad.AnnData, *, progress: bool = False) -> None:
        """Images and masks of the patients with both, the held-out split (the cohort's one),
        and the fingerprint a resumed run must match."""
        if not adata.obs.get(K.HAS_MASK, pd.Series(False, index=adata.obs_names)).any():
            if self.trained:  # a loaded model on a cohort without masks: it can predict
                log.info("the cohort has no masks: the loaded Segmenter can predict, not train")
                return
        try:
            rows = image_rows(adata, need_mask=True)
        except ValueError as err:
            raise ValueError(
                f"{err}: a Segmenter trains on patients with a mask (obs['{K.MASK}'], "
                f"has_mask); predict masks with a trained one instead"
            ) from None
        view = self._view(adata)
        saved = self.held_out
        train_rows, val_rows = self._split(view, rows)
        if self.trained and saved and self.held_out != saved:
            log.warning("this cohort's held-out patients differ from the model's saved ones")
        self.image_data = ImageData.load(
            view, rows, train_rows, val_rows, self.config.data, genes=False, progress=progress
        )
        self.meta.update(n_train=len(self.image_data.train))
        d, s = self.config.data, self.config.segment
        self._fingerprint = self._fingerprint_of(
            view,
            train_rows,
            val_rows,
            segment=s,
            image=[self.channels, *self.image_size],
            intensity=[d.intensity, list(d.percentiles), d.a_min, d.a_max],
        )

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def _channels_last(self) -> bool:
        """Channels-last memory for the net and its batches (CUDA, train.channels_last)."""
        return self._cuda and self.config.train.channels_last

    @property
    def _memory_format(self):
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def _autocast(self):
        return autocast(self.device, self.config.train.amp)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self._memory_format) if self._channels_last else x

    # ---------------------------------------------------------------------------------------
    def train(self, run_dir: str | Path | None = None, *, progress: bool = True) -> dict:
        """Train for `segment.steps` batches (Adam, DiceCE loss on the logits) on the engine;
        with `run_dir`, checkpoint at every evaluation, resume from a checkpoint there, write
        the CSV log and save the model. Ends with the weights best on held-out Dice (the last
        ones without held-out patients)."""
        from monai.losses import DiceCELoss

        if getattr(self, "image_data", None) is None:
            raise ValueError(
                "this Segmenter was loaded without a cohort; Segmenter.load(dir, adata)"
            )
        cfg, s, device, net = self.config, self.config.segment, self.device, self.net
        data = self.image_data
        slices = data.slices(data.train)  # every slice of the training patients
        images, masks = slices.images.to(device), slices.masks.to(device)
        loss_fn = DiceCELoss(sigmoid=True)
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        settings = LoopSettings(
            steps=s.steps,
            eval_every=s.eval_every,
            checkpoint_every=s.eval_every,
            log_every=cfg.train.log_every,
            amp=cfg.train.amp,
        )
        trainer = Trainer(
            {"net": net},
            {"net": opt},
            settings,
            device=device,
            seed=cfg.seed,
            run_dir=run_dir,
            progress=progress,
            fingerprint=self._fingerprint,
            selected=net,
            desc="segmenter",
            score_name="val_dice",
        )

        def loss_step(rng):
            x, y = self._batch(images, masks, slices, rng)
            logits = net(x)
            loss = loss_fn(logits.float(), y)  # the loss in fp32 under bf16 autocast
            return loss, {"loss": loss.detach()}

        step = supervised_step(trainer, loss_step, net=net, opt=opt)
        evaluate = self._held_out_dice if len(data.held_out) else None
        result = trainer.fit(step, evaluate)
        net.load_state_dict(trainer.selected_state())
        net.eval()
        self.trained = True
        self.history = pd.DataFrame(trainer.history)
        best = trainer.best if result["best_step"] is not None else None
        summary = {
            "steps": result["steps"],
            "best_step": None if best is None else best["step"],
            "best_val_dice": None if best is None else best["score"],
            "n_train": len(data.train),
            "n_val": len(data.held_out),
            "resumed_from": result["resumed_from"],
        }
        self.meta["summary"] = summary
        if run_dir is not None and D.is_main():
            self.save(run_dir)
        log.info("segmenter: %s", summary)
        return summary

    def _held_out_dice(self) -> tuple[float, dict]:
        dice, iou = self._held_out_scores()
        return dice, {"val_iou": iou}  # Dice selects the weights; IoU is logged beside it

    def _held_out_scores(self) -> tuple[float, float]:
        """Mean Dice and IoU on the held-out patients (the net in eval mode, then back)."""
        data = self.image_data
        probs = self._probabilities(data.images[data.held_out])
        dice, iou = self._scores(probs, data.masks[data.held_out], self.config.segment.threshold)
        return float(dice.mean()), float(iou.mean())

    def _batch(self, images, masks, slices, rng):
        """A random batch of training patients (`slices`: theirs; one slice of each for slice
        stacks) with flips and intensity jitter, drawn with `rng` (CPU) and applied on the
        device: (B, C, *spatial), (B, 1, *spatial)."""
        s, dims = self.config.segment, self.spatial_dims
        patients = torch.randint(len(slices.count), (s.batch_size,), generator=rng)
        idx = to_device(slices.draw(patients, rng), self.device)
        x, y = images[idx], masks[idx]
        B = x.shape[0]
        flips = to_device(torch.rand(dims, B, generator=rng), self.device) < 0.5
        per_sample = (B,) + (1,) * (dims + 1)  # broadcast over (C, *spatial)
        for axis in range(dims):
            flip = flips[axis].view(per_sample)
            x = torch.where(flip, x.flip(2 + axis), x)
            y = torch.where(flip, y.flip(2 + axis), y)
        scale = 1 + 0.1 * (2 * torch.rand(B, generator=rng) - 1)
        shift = 0.1 * (2 * torch.rand(B, generator=rng) - 1)
        scale, shift = (to_device(t, self.device).view(per_sample) for t in (scale, shift))
        x = x * scale + shift
        return self._to_device(x), y

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
            if getattr(self, "image_data", None) is None:
                raise ValueError(
                    "this Segmenter has no cohort; evaluate(adata) or load(dir, adata)"
                )
            data = self.image_data
            if not len(data.held_out):
                raise ValueError("no held-out patients (train.val_fraction=0); evaluate(adata)")
            ids = np.asarray(data.patients)[data.held_out]
            dice, iou = self._scores(
                self._probabilities(data.images[data.held_out]),
                data.masks[data.held_out],
                threshold,
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
        (`<file-safe patient id>.<format>`, atomically, at each image file's own spatial size: the
        probabilities are resized back before thresholding). Returns a copy of `adata` whose
        `obs['mask']` points at them and whose `has_mask` is True for them; the paths are
        relative to the cohort's root (uns['rg']['root'], else the working folder) when
        `out_dir` lies inside it, absolute otherwise. NIfTI masks get an identity affine."""
        self.check_cohort(adata)
        if adata.uns.get(K.UNS, {}).get(K.SLICE_AXIS) is not None:
            raise ValueError(
                "write_masks writes one 2D mask per patient; the cohort's files stack slices "
                "(uns['rg']['slice_axis']): segment them slice by slice with predict_tensor"
            )
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
        names = file_stems(out.obs_names[rows])  # safe and unique, whatever the ids
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

    def check_cohort(self, adata: ad.AnnData) -> None:  # images only: no genes or covariates
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
