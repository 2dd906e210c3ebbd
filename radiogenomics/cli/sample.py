"""`radiogenomics sample RUN --out DIR`: synthetic patients of a trained run, written as a cohort
folder, through the models' one sampling surface: `iter_sample(n, covariates)` (fully
synthetic patients, batch by batch) or `generate_for(cohort)` (images for given patients)."""

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
    from radiogenomics.data.h5ad import read_valid_cohort
    from radiogenomics.models.base import load_model, model_class

    if not args.run.exists():
        raise FileNotFoundError(f"run folder {args.run} does not exist")
    # every input cohort is validated before the model loads: a bad one fails fast, by name
    adata, like, expression = (
        read_valid_cohort(path, progress=not args.quiet) if path is not None else None
        for path in (args.data, args.like, args.expression)
    )
    cls = model_class(args.run)
    if not (cls.draws_expression or cls.makes_images):
        raise ValueError(f"{args.run} holds a {cls.__name__}, which samples no patients")
    _check_flags(args, cls, expression)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    model = load_model(args.run, adata)
    given = like if like is not None else expression
    if given is not None:  # one synthetic patient per given patient
        synth = model.generate_for(given, seed=args.seed)
        synth.adata.uns["rg"]["synthetic"]["run"] = str(args.run)  # generate_for names the
        return _write_images(synth, args)  # patients it could not generate for
    if model.samples_need_cohort and not model.patients:
        raise ValueError(
            "an image run draws its patients' expression profiles (or masks) from its "
            "training cohort: pass --data (that cohort) or --expression (e.g. a GeneGAN "
            "sample's cohort.h5ad)"
        )
    if args.n is None or args.n < 1:
        raise ValueError(f"--n must be a positive number of patients; got {args.n}")
    return _write_sample(model, args)


def _write_sample(model, args) -> int:
    """`--n` patients of `model.iter_sample`, written batch by batch (so --n may exceed
    memory), and a grid of the first batch's patients where they have images."""
    from radiogenomics.data.h5ad import write_patient_batches

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


def _check_flags(args, cls, expression) -> None:
    """Refuse, by name, the flags that a run of model class `cls` would ignore or that
    contradict each other, and a --n that the run would not honour."""
    given = {
        flag: getattr(args, key) is not None
        for flag, key in (("--data", "data"), ("--expression", "expression"), ("--like", "like"))
    }
    given["--covariate"] = bool(args.covariate)
    if not cls.makes_images:
        wrong = [f for f in ("--data", "--expression", "--like") if given[f]]
        if wrong:
            raise ValueError(
                f"{args.run} is a gene run ({cls.__name__}), which draws expression only: "
                f"{', '.join(wrong)} apply to image and joint runs"
            )
        if args.n is None:
            raise ValueError(f"{args.run} is a gene run: pass --n, the number of patients")
        return
    if given["--like"]:
        # --like: one patient per patient of that cohort, from its own expression and mask
        wrong = [f for f in ("--data", "--expression", "--covariate") if given[f]]
        if args.n is not None:
            wrong.append("--n")
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} given with --like, which makes one synthetic patient per "
                "patient of its cohort from that patient's expression and mask: drop "
                f"{'it' if len(wrong) == 1 else 'them'}, or drop --like"
            )
        return
    if cls.draws_expression and given["--data"]:
        raise ValueError(
            "a joint run draws expression from its own gene generator: --data does not apply "
            "(--like or --expression give images for a cohort's real expression)"
        )
    if given["--expression"] and given["--data"]:
        raise ValueError(
            "--data given with --expression, whose patients get one image each from their own "
            "expression (and mask, or one the mask generator draws): drop --data"
        )
    if given["--expression"] and given["--covariate"]:
        raise ValueError("--covariate applies to fully synthetic patients, not to --expression")
    if expression is not None and args.n is not None and args.n != expression.n_obs:
        raise ValueError(
            f"--n {args.n} but --expression {args.expression} holds {expression.n_obs} "
            "patients, each of whom gets one image: drop --n, or pass a cohort of "
            f"{args.n} patients"
        )
    if not cls.draws_expression:
        if given["--covariate"]:
            raise ValueError("--covariate applies to gene runs; an image run follows --expression")
        if expression is None and args.n is None:
            raise ValueError(
                f"{args.run} is an image run: pass --n (patients drawn from --data) or "
                "--expression (one image per patient) or --like"
            )


def _write_images(synth, args) -> int:
    path = synth.write(
        args.out, image_format=args.format, progress=not args.quiet, overwrite=args.overwrite
    )
    say(f"{synth.adata.n_obs} synthetic patients (images in {args.out / 'images'})", path)
    from radiogenomics import pl

    pl.patients(synth.adata, images=synth.images, masks=synth.masks, save=args.out / "samples.png")
    say("sample grid", args.out / "samples.png")
    return 0
