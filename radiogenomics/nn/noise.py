"""The noise of one draw of patients, and the one rule that seeds it.

Every place that runs the patient chain (training objectives, sampling, model selection, the
learned map) takes its randomness as a `Noise`: the gene generator's noise vector, the image
generator's noise vector and per-scale noise maps (or, for the flow backend, `nn.flow`, the
full-size noise image its ODE starts from), and the mask generator's noise maps (the mask
generator reads the image's noise vector, as the joint model trains it; the flow backend has
none to share, so its mask generator draws its own). `Noise.draw` fixes the order of the
draws, so a seed gives the same patients wherever it is used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from radiogenomics._device import to_device

# Masks drawn for given patients (`draw_masks`) take their noise from `seed + MASK_SEED_OFFSET`:
# a different stream from the images of the same seed, which a given mask would otherwise
# share with a generated one. A prime, so it meets no other seed rule's multiple.
MASK_SEED_OFFSET = 7919


def _rows(x, rows):
    if x is None:
        return None
    return [m[rows] for m in x] if isinstance(x, list) else x[rows]


@dataclasses.dataclass
class Noise:
    """One draw of the chain's noise for a batch of B patients.

    Attributes
    ----------
    image : torch.Tensor or None
        (B, n_noise): the image generator's noise vector (the mask generator reads it too,
        unless `mask` is set).
    image_maps : list of torch.Tensor or None
        Per-pixel noise, one (B, 1, *size) map per decoder scale of the image generator.
    mask_maps : list of torch.Tensor or None
        The same for the mask generator (None without one).
    gene : torch.Tensor or None
        (B, n_noise_gene): the gene generator's noise (None where expression is given).
    mask : torch.Tensor or None
        (B, n_noise): the mask generator's own noise vector, where it is not `image`.
    start : torch.Tensor or None
        (B, C, *S): the flow backend's starting image (standard normal), which its ODE
        carries to the image; None for the GAN.
    """

    image: torch.Tensor | None = None
    image_maps: list[torch.Tensor] | None = None
    mask_maps: list[torch.Tensor] | None = None
    gene: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    start: torch.Tensor | None = None

    @property
    def mask_vector(self) -> torch.Tensor | None:
        """The mask generator's noise vector: its own, else the image's."""
        return self.image if self.mask is None else self.mask

    def __len__(self) -> int:
        for x in (self.image, self.gene, self.mask, self.start):
            if x is not None:
                return len(x)
        return 0

    def rows(self, rows) -> Noise:
        """The noise of a subset of the patients (an index, mask or slice)."""
        return Noise(
            **{f.name: _rows(getattr(self, f.name), rows) for f in dataclasses.fields(self)}
        )

    def to(self, device) -> Noise:
        """The same noise on `device`."""

        def move(x):
            if x is None:
                return None
            return (
                [to_device(m, device) for m in x] if isinstance(x, list) else to_device(x, device)
            )

        return Noise(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    @classmethod
    def draw(
        cls,
        side,
        n: int,
        rng: torch.Generator,
        *,
        device=None,
        n_gene: int = 0,
        image: bool = True,
        mask: str | None = "shared",
    ) -> Noise:
        """Draw the noise of `n` patients from `rng`, in a fixed order: the gene noise
        (`n_gene` > 0), the image noise vector and maps (`image`; a flow side's starting image
        instead), the mask generator's own noise vector (`mask` 'own', or 'shared' on a flow
        side, which has no image vector to share), the mask maps (`mask` 'shared' or 'own', on
        a side with a mask generator).

        Parameters
        ----------
        side : ImageSide or None
            The image side (`nn.image.ImageSide`) whose generators take the noise; None draws
            the gene noise only.
        n : int
            Number of patients.
        rng : torch.Generator
            The CPU generator drawn from (moved to `device` afterwards, so a seed gives the
            same noise on every device).
        device : torch.device, optional
            Where the noise goes.
        n_gene : int
            Width of the gene generator's noise; 0 draws none.
        image : bool
            Draw the image generator's noise vector and maps.
        mask : {'shared', 'own', None}
            The mask generator's noise: 'shared' reads the image's vector (as training does),
            'own' draws a vector of its own, None draws no mask noise.

        Returns
        -------
        Noise

        Examples
        --------
        >>> import torch
        >>> noise = Noise.draw(None, 4, torch.Generator().manual_seed(0), n_gene=8)
        >>> tuple(noise.gene.shape)
        (4, 8)
        """
        if mask not in ("shared", "own", None):
            raise ValueError(f"mask must be 'shared', 'own' or None; got {mask!r}")
        out = cls()
        if n_gene:
            out.gene = torch.randn(n, n_gene, generator=rng)
        if side is not None:
            flow = getattr(side.image, "start_shape", None)  # (C, *S) of a flow side's start
            if image and flow is not None:
                out.start = torch.randn(n, *flow, generator=rng)
            elif image:
                out.image = torch.randn(n, side.image.n_noise, generator=rng)
                out.image_maps = side.image.noise_maps(n, generator=rng)
            if side.mask is not None and mask is not None:
                if mask == "own" or flow is not None:
                    out.mask = torch.randn(n, side.mask.n_noise, generator=rng)
                out.mask_maps = side.mask.noise_maps(n, generator=rng)
        return out.to(device) if device is not None else out

    @classmethod
    def chunks(
        cls, side, n: int, seed: int, batch_size: int, *, device=None, masks: bool = False
    ) -> Iterator[tuple[slice, Noise]]:
        """`(rows, noise)` for `n` given patients in chunks of `batch_size`, drawn from one
        stream: their images' noise seeded with `seed`, or (`masks`) their mask generator's
        own noise seeded with `seed + MASK_SEED_OFFSET`."""
        rng = torch.Generator().manual_seed(seed + (MASK_SEED_OFFSET if masks else 0))
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            b = rows.stop - rows.start
            if masks:
                yield rows, cls.draw(side, b, rng, device=device, image=False, mask="own")
            else:
                yield rows, cls.draw(side, b, rng, device=device, mask=None)
