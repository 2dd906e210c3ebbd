"""The work one training step does, counted rather than timed (issue 28, speed work): FLOPs,
convolution calls, network calls, eigen-decompositions and host-side reads per step, and a
profiler table of self CPU time by op (shares, which a loaded machine disturbs less than
totals). Optionally the same for another commit's library in the same process (`--ref`), with
a parameter check (the same steps from the same seed must give the same weights) and an
alternating A/B timing.

    python benchmarks/step_work.py joint                 # the demo's joint step (32^2, batch 16)
    python benchmarks/step_work.py image                 # xu_nodule's update at 128^2, batch 16
    python benchmarks/step_work.py joint --ref main --check 3 --ab 20 --profile

The steps are the library's own (`_bench.engine_of`), on the CPU at OMP_NUM_THREADS=1 unless
set. `--ref REF` extracts REF's `radiogenomics/` (git archive) into a temporary folder and
imports it under the same name after the working tree's modules are set aside, so both
engines live in one process. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# case -> (preset, overrides, phantom (n, size)): the suite's shapes (test_joint_throughput's
# demo case at smoke size; test_image_throughput's 2d-128 at full size)
CASES = {
    "joint": ("configs/joint_phantom_2d.yaml", ["data.image_size=[32,32]"], (64, 32)),
    "image": (
        "configs/xu_nodule.yaml",
        ["data.image_size=[128,128]", "train.batch_size=16", "train.n_critic=1"],
        (64, 128),
    ),
}
COUNTED = {
    "conv": ("aten.convolution.default", "aten.convolution_backward.default"),
    "eigh": ("aten._linalg_eigh.default",),
    "inv": ("aten.linalg_inv_ex.default",),
    # a read of a tensor's value into Python (.item(), float(), bool(), `if tensor`) and
    # boolean indexing: each waits for the device on CUDA when the tensor lives there
    "host_reads": ("aten._local_scalar_dense.default", "aten.nonzero.default"),
}


class OpCounter(TorchDispatchMode):
    """Counts aten ops, and the library source lines that issue host reads."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.reads = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.ops[name] += 1
        if name in COUNTED["host_reads"] or _bool_index(func, args):
            stack = traceback.extract_stack()
            frames = [f for f in stack if "radiogenomics/" in f.filename]
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            if any("torch/optim/" in f.filename for f in stack):
                where = "optimiser step counts (CPU tensors unless fused: no device wait)"
            self.reads[f"{name.split('.')[1]} {where}"] += 1
        return func(*args, **(kwargs or {}))


def _bool_index(func, args) -> bool:
    """Indexing with a boolean mask (`x[mask]`, `x[mask] = v`): the mask's nonzero count sets
    the result's size, a wait for the device on CUDA where the mask lives there."""
    if func not in (torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default,
                    torch.ops.aten.index_put.default):  # fmt: skip
        return False
    return any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
    )


def _swap_in(src: Path | None):
    """Import `radiogenomics` (and the harness) from `src` (None: the working tree)."""
    for name in list(sys.modules):
        if name in ("radiogenomics", "_bench") or name.startswith("radiogenomics."):
            del sys.modules[name]
    for p in (str(ROOT), *[str(q) for q in _SOURCES]):
        while p in sys.path:
            sys.path.remove(p)
    sys.path.insert(0, str(src or ROOT))
    sys.path.insert(0, str(HERE))


_SOURCES: list[Path] = []


def extract(ref: str) -> Path:
    """`ref`'s radiogenomics/ in a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="step_work_"))
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "radiogenomics"],
                          check=True, capture_output=True).stdout  # fmt: skip
    tar = out / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        try:
            t.extractall(out, filter="data")
        except TypeError:  # Python before 3.10.12 / 3.11.4: no extraction filters
            t.extractall(out)  # our own `git archive`, nothing to filter
    _SOURCES.append(out)
    return out


def cohort(case: str):
    from radiogenomics.data.h5ad import read_cohort
    from radiogenomics.data.phantom import make_phantom, write_phantom

    n, side = CASES[case][2]
    out = Path(tempfile.mkdtemp(prefix=f"step_work_{case}_"))
    phantom = make_phantom(n, 2, size=side, n_genes=128, seed=0, frac_image_only=0.05,
                           frac_expression_only=0.05, progress=False)  # fmt: skip
    return read_cohort(write_phantom(phantom, out, progress=False))


def build(case: str, adata, src: Path | None, extra: list[str]):
    """(engine, model) of `case` with the library at `src` (None: the working tree)."""
    _swap_in(src)
    import _bench

    from radiogenomics.models import ImageGAN, JointGAN

    preset, overrides, _ = CASES[case]
    cfg = _bench.config([*overrides, "train.val_fraction=0", *extra], path=ROOT / preset)
    torch.manual_seed(0)
    cls = JointGAN if case == "joint" else ImageGAN
    model = cls(adata.copy(), cfg, progress=False)
    engine = _bench.engine_of(model)
    torch.manual_seed(0)  # the global RNG (dropout), as Trainer.fit seeds it
    return engine, model


def networks(model) -> dict:
    """name -> network, for per-network call counts."""
    out = {}
    for root in ("generator", "critic"):
        for name, m in getattr(model, root).named_modules():
            kind = type(m).__name__
            if kind in NETWORKS:
                out[f"{root}.{name}" if name else root] = m
    return out


NETWORKS = {"GeneGenerator", "GeneCritic", "GeneEncoder", "ImageGenerator", "MaskGenerator",
            "ImageCritic", "GeneRegressor", "SegmentationNet", "UNet"}  # fmt: skip


def count(engine, model, steps: int = 1) -> dict:
    """Per step: FLOPs, op counts, network calls, host reads."""
    import _bench

    engine()  # lazy set-up outside the counts
    calls, inside = collections.Counter(), []
    ops, flops = OpCounter(), _bench.flop_counter()

    def enter(name):
        calls.update([name])
        inside.append((name, flops.get_total_flops()))

    def leave(name):
        n, start = inside.pop()
        if not inside:  # the outermost network's forward FLOPs (its backward is not here)
            forward[n] += flops.get_total_flops() - start

    forward = collections.Counter()
    hooks, wrapped = [], []
    for n, m in networks(model).items():
        if hasattr(m, "trunk"):  # an ImageCritic: its forward runs trunk, which also runs alone
            wrapped.append(m)
            m.trunk = _counted(m.trunk, n, enter, leave)
            continue
        hooks.append(m.register_forward_pre_hook(lambda *_, n=n: enter(n)))
        hooks.append(m.register_forward_hook(lambda *_, n=n: leave(n)))
    try:
        with flops, ops:
            for _ in range(steps):
                engine()
    finally:
        for h in hooks:
            h.remove()
        for m in wrapped:
            del m.trunk
    per = lambda v: v / steps  # noqa: E731
    out = {"flops": per(flops.get_total_flops())}
    for key, names in COUNTED.items():
        out[key] = per(sum(ops.ops[n] for n in names))
    out["ops"] = per(sum(ops.ops.values()))
    out["calls"] = {k: per(v) for k, v in sorted(calls.items())}
    out["forward"] = {k: per(v) for k, v in forward.most_common()}
    out["reads"] = {k: per(v) for k, v in ops.reads.most_common()}
    return out


def _counted(fn, name, enter, leave):
    def run(*args, **kwargs):
        enter(name)
        try:
            return fn(*args, **kwargs)
        finally:
            leave(name)

    return run


def profile(engine, steps: int = 5, rows: int = 15) -> list[tuple[str, float, int]]:
    """(op, share of self CPU time, calls per step) of the top `rows` ops over `steps`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    engine()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(steps):
            engine()
    events = p.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]
    return [(e.key, e.self_cpu_time_total / total, e.count // steps) for e in top]


def params(model) -> dict:
    return {f"{r}.{k}": v.detach().clone()
            for r in ("generator", "critic") for k, v in getattr(model, r).state_dict().items()}  # fmt: skip


def compare(a: dict, b: dict) -> tuple[bool, float]:
    """(bit-identical, largest absolute difference) of two state dicts."""
    if a.keys() != b.keys():
        raise ValueError(f"different parameters: {sorted(set(a) ^ set(b))}")
    same = all(torch.equal(a[k], b[k]) for k in a)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    return same, diff


def gradients(engine, model) -> dict:
    """(loss, gradients) of the main critic update and then of the generator update, from
    the engine's first batches, without an optimiser step: where two versions differ in the
    order of floating-point operations, these agree to rounding while a few Adam steps
    amplify it (a near-zero gradient's sign sets a whole lr-sized step)."""
    p, rng, out = engine.parts, engine.trainer.rng, {}
    torch.manual_seed(0)  # the global RNG (dropout), as for the parameter check
    for name, fn, frozen in (("critic", p["critic_step"], None),
                             ("generator", p["generator_step"], p["critic"])):  # fmt: skip
        for opt in (p["opt_c"], p["opt_g"]):
            opt.zero_grad(set_to_none=True)
        if frozen is not None:
            frozen.requires_grad_(False)
        loss = fn(rng)[0]
        loss.backward()
        if frozen is not None:
            frozen.requires_grad_(True)
        net = p["generator"] if frozen is not None else p["critic"]
        out[name] = (loss.detach(), {k: v.grad.clone() for k, v in net.named_parameters()
                                     if v.grad is not None})  # fmt: skip
    return out


def _network(name: str) -> str:
    """The network a parameter belongs to: `side.image.x.y` -> `side.image`, `gene.x` -> `gene`."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "side" else parts[0]


def compare_gradients(a: dict, b: dict) -> None:
    """Print the losses and the largest gradient difference of `gradients`' two results,
    relative to the largest gradient of the same network: a tensor whose gradient is 0 in
    exact arithmetic (a bias before an instance norm) holds rounding noise alone."""
    for name in a:
        (la, ga), (lb, gb) = a[name], b[name]
        if ga.keys() != gb.keys():
            print(f"  {name}: different parameters get gradients")
            continue
        scale: dict = {}
        for k, g in ga.items():
            scale[_network(k)] = max(scale.get(_network(k), 0.0), float(g.abs().max()))
        rel = {k: float((ga[k] - gb[k]).abs().max()) / max(scale[_network(k)], 1e-30) for k in ga}
        worst = max(rel, key=rel.get)
        print(f"  {name} update: loss {float(la):.9g} vs {float(lb):.9g}; largest gradient "
              f"difference over {len(ga)} tensors {rel[worst]:.2e} of its network's largest "
              f"gradient ({worst})")  # fmt: skip


def ab(engines: dict, steps: int, rounds: int) -> dict:
    """name -> median seconds a step, over `rounds` alternating blocks of `steps` steps."""
    times = {k: [] for k in engines}
    for e in engines.values():
        e()
    for _ in range(rounds):
        for name, e in engines.items():
            t = time.perf_counter()
            for _ in range(steps):
                e()
            times[name].append((time.perf_counter() - t) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def report(name: str, c: dict) -> None:
    print(f"\n[{name}] per step: {c['flops'] / 1e9:.3f} GFLOP, conv ops {c['conv']:.0f} "
          f"(forward + backward), eigh {c['eigh']:.0f}, inv {c['inv']:.0f}, host reads "
          f"{c['host_reads']:.0f}, aten ops {c['ops']:.0f}")  # fmt: skip
    print("  network calls: " + ", ".join(f"{k} {v:g}" for k, v in c["calls"].items()))
    print(
        "  forward GFLOP by network: "
        + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in c["forward"].items())
    )
    print("  host reads: " + (", ".join(f"{k} x{v:g}" for k, v in c["reads"].items()) or "none"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", choices=list(CASES))
    ap.add_argument("--ref", help="a git ref to compare with (e.g. main)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for both")
    ap.add_argument("--profile", action="store_true", help="self CPU time by op")
    ap.add_argument("--check", type=int, default=0, help="steps of the parameter check")
    ap.add_argument("--ab", type=int, default=0, help="steps per A/B block (needs --ref)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B blocks each")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    _swap_in(None)
    adata = cohort(args.case)
    sources = {"new": None}
    if args.ref:
        sources = {args.ref: extract(args.ref), "new": None}
    built = {k: build(args.case, adata, s, args.set) for k, s in sources.items()}
    if args.check:
        if not args.ref:
            raise SystemExit("--check needs --ref")
        states = {}
        for k, (engine, model) in built.items():
            torch.manual_seed(0)
            for _ in range(args.check):
                engine()
            states[k] = params(model)
        same, diff = compare(*states.values())
        print(f"\nparameters after {args.check} steps: bit-identical {same}, max |diff| {diff:.3g}")
        if not same:
            built = {k: build(args.case, adata, s, args.set) for k, s in sources.items()}
            compare_gradients(*[gradients(e, m) for e, m in built.values()])
        built = {k: build(args.case, adata, s, args.set) for k, s in sources.items()}
    for k, (engine, model) in built.items():
        report(k, count(engine, model))
    if args.profile:
        for k, (engine, _) in built.items():
            print(f"\n[{k}] self CPU time by op (share, calls a step), {torch.get_num_threads()} "
                  "thread(s):")  # fmt: skip
            for key, share, n in profile(engine):
                print(f"  {share:6.1%}  {n:5d}  {key}")
    if args.ab:
        if not args.ref:
            raise SystemExit("--ab needs --ref")
        engines = {k: e for k, (e, _) in built.items()}
        t = ab(engines, args.ab, args.rounds)
        ref, new = t[args.ref], t["new"]
        print(f"\nA/B ({args.rounds} alternating blocks of {args.ab} steps, median, "
              f"{torch.get_num_threads()} thread(s); LOADED shared machine): {args.ref} "
              f"{ref:.4f} s/step, new {new:.4f} s/step, speed-up {ref / new:.2f}x")  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
