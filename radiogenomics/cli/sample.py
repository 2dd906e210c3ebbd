"""`radiogenomics sample RUN --out DIR`: synthetic patients of a trained run, written as a cohort
folder. `cmd_sample` branches on the run's model kind; its helpers stay here with it."""

from __future__ import annotations

from radiogenomics.cli.common import say


def _covariate_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--covariate {item!r} must look like KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def cmd_sample(args) -> int:
    from radiogenomics.data.folders import COHORT_FILE, cohort_folder
    from radiogenomics.data.h5ad import read_valid_cohort, write_cohort
    from radiogenomics.models.base import read_meta

    # every input cohort is validated before the model loads: a bad one fails fast, by name
    adata, like, expression = (
        read_valid_cohort(path, progress=not args.quiet) if path is not None else None
        for path in (args.data, args.like, args.expression)
    )
    kind = read_meta(args.run)["model"]
    if kind == "segmentation":
        raise ValueError(f"{args.run} holds a segmentation net, which samples no patients")
    if kind == "joint_gan":
        return _sample_joint(args, like)
    if kind == "gene_gan":
        from radiogenomics.models.gene_gan import GeneGAN

        model = GeneGAN.load(args.run)
        synth = model.sample(args.n, _covariate_args(args.covariate), seed=args.seed)
        synth.uns["rg"]["synthetic"]["run"] = str(args.run)
        with cohort_folder(args.out, args.overwrite) as tmp:  # replaces a sample whole
            write_cohort(synth, tmp / COHORT_FILE)
        say(f"{synth.n_obs} synthetic patients", args.out / COHORT_FILE)
        return 0
    from radiogenomics.models.image_gan import ImageGAN

    if args.covariate:
        raise ValueError("--covariate applies to gene runs; an image run follows --expression")
    model = ImageGAN.load(args.run, adata)
    if like is not None:
        synth = model.counterparts(like, seed=args.seed)
        synth.adata.uns["rg"]["synthetic"]["image_run"] = str(args.run)
        return _write_images(synth, args)
    needs_masks = model.config.image.use_mask and model.sampler.mask is None
    if expression is None and adata is None and (model.genes or needs_masks):
        raise ValueError(
            "an image run samples expression (and masks) from a cohort: pass --data (its "
            "training cohort) or --expression (e.g. a GeneGAN sample's cohort.h5ad)"
        )
    synth = model.sample(args.n, expression, seed=args.seed)
    synth.adata.uns["rg"]["synthetic"]["image_run"] = str(args.run)
    return _write_images(synth, args)


def _sample_joint(args, like) -> int:
    """Fully synthetic patients of a joint run, generated and written batch by batch (so
    --n may exceed memory); with --like, images for that cohort's expression and masks."""
    from radiogenomics.data.h5ad import write_patient_batches
    from radiogenomics.models.joint_gan import JointGAN

    if args.data is not None or args.expression is not None:
        raise ValueError(
            "a joint run draws expression from its own gene generator: --data and --expression "
            "do not apply (--like gives images for a cohort's real expression)"
        )
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    model = JointGAN.load(args.run)
    if like is not None:
        if args.covariate:
            raise ValueError("--covariate applies to fully synthetic patients, not to --like")
        synth = model.generate_images(like, seed=args.seed)
        synth.adata.uns["rg"]["synthetic"]["run"] = str(args.run)
        return _write_images(synth, args)
    if args.n is None or args.n < 1:
        raise ValueError(f"--n must be a positive number of patients; got {args.n}")
    covariates = _covariate_args(args.covariate)
    first = []

    def batches():
        for batch in model.iter_sample(
            args.n, covariates, seed=args.seed, batch_size=args.batch_size
        ):
            batch.adata.uns["rg"]["synthetic"]["run"] = str(args.run)
            if not first:
                first.append(batch)
            yield batch.files()

    path = write_patient_batches(
        batches(),
        args.out,
        args.format,
        not args.quiet,
        total=args.n,
        desc="sampling synthetic patients",
        overwrite=args.overwrite,
    )
    say(f"{args.n} synthetic patients", path)
    if first and first[0].images is not None:
        from radiogenomics import pl

        b = first[0]
        pl.patients(b.adata, images=b.images, masks=b.masks, save=args.out / "samples.png")
        say("sample grid", args.out / "samples.png")
    return 0


def _write_images(synth, args) -> int:
    path = synth.write(
        args.out, image_format=args.format, progress=not args.quiet, overwrite=args.overwrite
    )
    say(f"{synth.adata.n_obs} synthetic patients (images in {args.out / 'images'})", path)
    from radiogenomics import pl

    pl.patients(synth.adata, images=synth.images, masks=synth.masks, save=args.out / "samples.png")
    say("sample grid", args.out / "samples.png")
    return 0
