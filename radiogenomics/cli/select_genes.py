"""`radiogenomics select-genes`: a cohort with the genes that differential expression, pathway
gene sets or variance select."""

from __future__ import annotations

from radiogenomics import _keys as K
from radiogenomics.cli.common import config_path, resolve_config, say, write_csv
from radiogenomics.config import dump_config


def cmd_select_genes(args) -> int:
    from radiogenomics import pl, pp
    from radiogenomics.data.h5ad import read_valid_cohort, write_cohort

    cfg = resolve_config(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    sel = cfg.select
    adata = read_valid_cohort(args.data, progress=not args.quiet)
    stem = args.out.with_suffix("")
    if sel.method == "de":
        if sel.groupby is None or sel.group is None:
            raise ValueError("select.method 'de' needs keys 'select.groupby' and 'select.group'")
        pp.rank_genes(
            adata,
            sel.groupby,
            sel.group,
            sel.reference,
            pair_by=sel.pair_by,
            correction=sel.correction,
            alpha=sel.alpha,
            min_log2fc=sel.min_log2fc,
            log_base=sel.log_base,
        )
        table = pp.de_table(adata)
        genes = table.index[table["selected"]].tolist()
        write_csv(table, stem.with_name(stem.name + "_de.csv"))
        pl.volcano(adata, save=stem.with_name(stem.name + "_volcano.png"))
        say("differential expression", stem.with_name(stem.name + "_de.csv"))
        say("volcano plot", stem.with_name(stem.name + "_volcano.png"))
    elif sel.method == "pathway":
        if sel.gmt is None:
            raise ValueError("select.method 'pathway' needs key 'select.gmt' (a GMT file)")
        pp.pathway_genes(adata, config_path(args, "select.gmt", sel.gmt), sel.pathways)
        report = pp.pathway_table(adata)
        genes = adata.var_names[adata.var[f"{K.PATHWAYS}_selected"]].tolist()
        write_csv(report, stem.with_name(stem.name + "_pathways.csv"))
        say("pathway report", stem.with_name(stem.name + "_pathways.csv"))
    else:
        genes = pp.highly_variable(adata, sel.n_top)
    if not genes:
        raise ValueError(f"select.method '{sel.method}' selected no gene; loosen its thresholds")
    path = write_cohort(pp.select_genes(adata, genes), args.out)
    say(f"cohort with {len(genes)} selected genes", path)
    return 0
