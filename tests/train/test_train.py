"""Losses, the adversarial loop and checkpoints."""

from __future__ import annotations

import copy
import shutil
import types

import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics.config import TrainConfig
from radiogenomics.nn.gene import GeneCritic, GeneGenerator, embedding_dim
from radiogenomics.train.checkpoint import load_checkpoint, save_checkpoint
from radiogenomics.train.loop import (
    LoopSettings,
    Trainer,
    adam,
    adversarial_step,
    decayed,
    ema_of,
    lr_factor,
)
from radiogenomics.train.losses import critic_loss, generator_loss, gradient_penalty


def test_gradient_penalty_of_a_linear_critic_is_the_norm_gap():
    # D(x) = w.x has gradient w everywhere: penalty = (||w|| - 1)^2 whatever the samples
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    gp = gradient_penalty(lambda x: x @ w, real, fake)
    assert gp.item() == pytest.approx(16.0, rel=1e-6)


def test_gradient_penalty_matches_hand_computation_for_a_quadratic_critic():
    # D(x) = 0.5 ||x||^2 has gradient x: penalty = mean_i (||x_hat_i|| - 1)^2
    real, fake = torch.randn(6, 3, 2), torch.randn(6, 3, 2)
    gp = gradient_penalty(
        lambda x: 0.5 * (x**2).flatten(1).sum(1),
        real,
        fake,
        generator=torch.Generator().manual_seed(3),
    )
    eps = torch.rand((6, 1, 1), generator=torch.Generator().manual_seed(3))
    x_hat = eps * real + (1 - eps) * fake
    expected = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_penalty_is_fp32_under_bf16_autocast():
    w = torch.tensor([0.6, 0.8])  # unit norm: penalty exactly 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = gradient_penalty(lambda x: x @ w, torch.randn(4, 2), torch.randn(4, 2))
    assert gp.dtype == torch.float32
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


def test_wasserstein_losses_read_like_their_equations():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert critic_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_loss(fake).item() == pytest.approx(0.5)


@pytest.mark.parametrize(("vocab", "dim"), [(1, 2), (2, 2), (4, 3), (9, 4), (24, 5)])
def test_embedding_size_follows_ggan(vocab, dim):
    assert embedding_dim(vocab) == dim


def test_gene_networks_shapes_and_covariates():
    G = GeneGenerator(30, [3, 2], 1, n_noise=8, n_hidden=16, n_layers=2)
    C = GeneCritic(30, [3, 2], 1, n_hidden=16, n_layers=3)
    codes = torch.tensor([[0, 1], [2, 0], [1, 1], [0, 0]])
    numeric = torch.randn(4, 1)
    x, hidden = G(torch.randn(4, 8), codes, numeric)
    assert x.shape == (4, 30) and hidden.shape == (4, 16)
    assert C(x, codes, numeric).shape == (4,)
    # 3 + 2 embedding features (sizes 2 and 2) + 1 numeric
    assert G.covariates.out_features == 2 + 2 + 1
    assert sum(isinstance(m, torch.nn.Linear) for m in C.body) == 3
    # no covariates at all still works
    G0 = GeneGenerator(5, n_noise=4, n_hidden=8)
    out, _ = G0(torch.randn(2, 4), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0))
    assert out.shape == (2, 5)


def _toy_trainer(run_dir, steps, seed=0, **settings):
    """A tiny gene GAN on the engine: (trainer, step, evaluate, (critic_step, generator_step),
    make_step) where make_step(critic_step, generator_step) builds a step of other losses."""
    torch.manual_seed(seed)
    G = GeneGenerator(4, n_noise=2, n_hidden=8, n_layers=1)
    C = GeneCritic(4, n_hidden=8, n_layers=1)
    data = torch.randn(64, 4, generator=torch.Generator().manual_seed(1)) * 2 + 1
    none_c, none_u = torch.zeros(8, 0, dtype=torch.long), torch.zeros(8, 0)

    def critic_step(rng):
        real = data[torch.randint(64, (8,), generator=rng)]
        fake = G(torch.randn(8, 2, generator=rng), none_c, none_u)[0].detach()
        gp = gradient_penalty(lambda x: C(x, none_c, none_u), real, fake, generator=rng)
        loss = critic_loss(C(real, none_c, none_u), C(fake, none_c, none_u)) + 10 * gp
        return loss, {"critic": loss.detach()}

    def generator_step(rng):
        loss = generator_loss(
            C(G(torch.randn(8, 2, generator=rng), none_c, none_u)[0], none_c, none_u)
        )
        return loss, {"generator": loss.detach()}

    opt_g, opt_c = adam([(G, 5e-4)], (0.5, 0.9)), adam([(C, 5e-4)], (0.5, 0.9))
    ema = ema_of(G, 0.999)
    loop = dict(steps=steps, eval_every=5, checkpoint_every=5, log_every=1) | settings
    trainer = Trainer(
        {"generator": G, "critic": C, "ema": ema},
        {"generator": opt_g, "critic": opt_c},
        LoopSettings(**loop),
        device=torch.device("cpu"),
        seed=seed,
        run_dir=run_dir,
        progress=False,
        selected=ema.module,
    )

    def make_step(c=critic_step, g=generator_step):
        return adversarial_step(
            trainer, c, g, generator=G, critic=C, opt_g=opt_g, opt_c=opt_c, n_critic=2, ema=ema
        )

    def evaluate():
        x = ema.module(torch.ones(8, 2), none_c, none_u)[0]
        return -float((x.mean(0) - 1).abs().mean())

    return trainer, make_step(), evaluate, (critic_step, generator_step), make_step


class _Killed(Exception):
    pass


def _identical(a: dict, b: dict) -> None:
    """Zero tolerance: every tensor equal bit for bit."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _kill_at(make_step, c, g, at: int):
    """A step that raises at generator call `at` (0-based), as a kill would."""
    calls = iter(range(1000))

    def dies(rng):
        if next(calls) == at:
            raise _Killed
        return g(rng)

    return make_step(c, dies)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight, step, evaluate, _, _ = _toy_trainer(tmp_path / "a", steps=20)
    straight.fit(step, evaluate)
    first, _, evaluate, (c, g), make_step = _toy_trainer(tmp_path / "b", steps=20)
    with pytest.raises(_Killed):  # killed mid-way between the checkpoints at steps 10 and 15
        first.fit(_kill_at(make_step, c, g, 12), evaluate)
    resumed, step, evaluate, _, _ = _toy_trainer(tmp_path / "b", steps=20)
    executed = []
    summary = resumed.fit(lambda rng: executed.append(1) or step(rng), evaluate)
    assert summary["steps"] == 20 and summary["resumed_from"] == 10
    assert len(executed) == 10  # it went on from the checkpoint, not from step 0
    for name in ("generator", "critic", "ema"):
        _identical(straight.modules[name].state_dict(), resumed.modules[name].state_dict())
    _identical(straight.selected_state(), resumed.selected_state())
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    steps = [int(line.split(",")[0]) for line in log[1:]]
    assert steps == list(range(1, 21))  # steps 11-12 replayed once, none logged twice


def test_resume_restores_the_global_rng(tmp_path):
    # dropout draws from the global RNG: a step that uses it resumes bit-identically too
    def draws(g, seen):
        def g_drop(rng):
            seen.append(torch.rand(3))  # what dropout would draw
            return g(rng)

        return g_drop

    straight, _, evaluate, (c, g), make_step = _toy_trainer(tmp_path / "a", steps=20)
    noise = []
    straight.fit(make_step(c, draws(g, noise)), evaluate)
    first, _, evaluate, (c, g), make_step = _toy_trainer(tmp_path / "b", steps=20)
    with pytest.raises(_Killed):
        first.fit(_kill_at(make_step, c, draws(g, []), 12), evaluate)
    resumed, _, evaluate, (c, g), make_step = _toy_trainer(tmp_path / "b", steps=20)
    again = []
    resumed.fit(make_step(c, draws(g, again)), evaluate)
    assert len(again) == 10
    for a, b in zip(noise[10:], again, strict=True):
        assert torch.equal(a, b)  # the global RNG continues where the checkpoint left it


def test_the_users_global_rng_is_untouched(tmp_path):
    trainer, step, evaluate, _, _ = _toy_trainer(None, steps=3)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    trainer.fit(step, evaluate)
    assert torch.equal(torch.rand(4), expected)


def test_resume_applies_a_changed_learning_rate(tmp_path, caplog):
    trainer, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=5)
    trainer.fit(step, evaluate)
    more, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=10)
    for group in more.optimizers["generator"].param_groups:
        group["lr"], group["betas"] = 1e-4, (0.0, 0.99)  # a changed train.lr and train.betas
    with caplog.at_level("WARNING"):
        more.fit(step, evaluate)
    groups = more.optimizers["generator"].param_groups
    assert all(g["lr"] == 1e-4 and tuple(g["betas"]) == (0.0, 0.99) for g in groups)
    assert "generator: lr 0.0005 in the checkpoint, 0.0001 in the config" in caplog.text


@pytest.mark.parametrize(
    "step, start, factor", [(0, 0.5, 1.0), (4, 0.5, 1.0), (5, 0.5, 1.0), (6, 0.5, 0.8),
                            (9, 0.5, 0.2), (0, 0.0, 1.0), (9, 0.0, 0.1), (9, 1.0, 1.0)],
)  # fmt: skip
def test_lr_factor_falls_linearly_after_its_start(step, start, factor):
    assert lr_factor(step, 10, start) == pytest.approx(factor)


def test_a_decayed_run_steps_with_the_scheduled_rates_and_checkpoints_the_configured(tmp_path):
    trainer, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=10)
    opts = list(trainer.optimizers.values())
    seen = []

    def spy(rng):
        seen.append([g["lr"] for opt in opts for g in opt.param_groups])
        return step(rng)

    train = types.SimpleNamespace(steps=10, lr_decay_start=0.5)
    trainer.fit(decayed(spy, trainer, opts, train), evaluate)
    expected = [5e-4 * lr_factor(i, 10, 0.5) for i in range(10)]
    assert np.allclose([lrs[0] for lrs in seen], expected) and seen[-1][0] < seen[5][0]
    assert all(len(set(lrs)) == 1 for lrs in seen)  # generator and critic alike
    assert all(g["lr"] == 5e-4 for opt in opts for g in opt.param_groups)
    saved = load_checkpoint(tmp_path / "checkpoint")[1]["optimizers"]["generator"]
    assert [g["lr"] for g in saved["param_groups"]] == [5e-4]
    off = types.SimpleNamespace(steps=10, lr_decay_start=1.0)
    assert decayed(spy, trainer, opts, off) is spy
    with pytest.raises(ValueError, match="lr_decay_start"):
        TrainConfig(lr_decay_start=1.5)


def test_tensorboard_scalars_survive_a_resume(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (the 'tensorboard' extra)",
    )
    first, _, evaluate, (c, g), make_step = _toy_trainer(tmp_path, steps=20)
    with pytest.raises(_Killed):
        first.fit(_kill_at(make_step, c, g, 12), evaluate)
    resumed, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=20)
    resumed.fit(step, evaluate)
    # one accumulator over the folder: it orders events by step and drops the purged ones,
    # whatever the names (and wall-clock seconds) of the two writers' files
    events = accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"critic", "generator", "val_score"} <= set(events.Tags()["scalars"])
    steps = [ev.step for ev in events.Scalars("generator")]
    assert steps == list(range(1, 21))  # the replayed steps 11-12 are not there twice
    logged = [ev.value for ev in events.Scalars("val_score")]
    from_csv = pd.read_csv(tmp_path / "log.csv")["val_score"].dropna().tolist()
    np.testing.assert_allclose(logged, from_csv, rtol=1e-6)


def test_a_run_folder_refuses_another_runs_checkpoint(tmp_path):
    trainer, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=5)
    trainer.fingerprint = {"patients": "abc", "genes": ["G1"]}
    trainer.fit(step, evaluate)
    other, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=10)
    other.fingerprint = {"patients": "xyz", "genes": ["G1"]}
    with pytest.raises(ValueError, match="another run: its 'patients' differs"):
        other.fit(step, evaluate)


def test_a_truncated_checkpoint_names_its_file(tmp_path):
    trainer, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=5)
    trainer.fit(step, evaluate)
    state = tmp_path / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    again, step, evaluate, _, _ = _toy_trainer(tmp_path, steps=10)
    with pytest.raises(ValueError, match=r"state\.pt is not a readable checkpoint state"):
        again.fit(step, evaluate)
    weights = tmp_path / "checkpoint" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"weights\.safetensors is not a readable safetensors"):
        again.fit(step, evaluate)


def test_best_weights_are_kept_and_early_stopping(tmp_path):
    trainer, step, _, _, _ = _toy_trainer(None, steps=200, patience=2)
    scores = iter([0.1, 0.5, 0.2, 0.3, 0.9])
    summary = trainer.fit(step, lambda: next(scores))
    assert summary["best_score"] == 0.5 and summary["best_step"] == 10
    assert summary["early_stopped"] and summary["steps"] == 20


def test_no_selection_before_select_after():
    trainer, step, _, _, _ = _toy_trainer(None, steps=20, select_after=10)
    scores = iter([0.9, 0.1, 0.3, 0.2])  # the best score comes too early to count
    summary = trainer.fit(step, lambda: next(scores))
    assert summary["best_score"] == 0.3 and summary["best_step"] == 15


def test_select_start_keeps_the_untrained_weights_when_nothing_beats_them():
    trainer, step, _, _, _ = _toy_trainer(None, steps=20, select_after=10, select_start=True)
    start = copy.deepcopy(trainer.selected.state_dict())
    scores = iter([0.8, 0.9, 0.1, 0.3, 0.2])  # step 0 first; step 5 is before select_after
    summary = trainer.fit(step, lambda: next(scores))
    assert summary["best_score"] == 0.8 and summary["best_step"] == 0
    _identical(trainer.selected_state(), start)
    assert trainer.history[0] == {"step": 0.0, "val_score": 0.8}


def test_select_start_loses_to_a_better_later_score():
    trainer, step, _, _, _ = _toy_trainer(None, steps=20, select_start=True)
    scores = iter([0.4, 0.1, 0.5, 0.3, 0.2])
    summary = trainer.fit(step, lambda: next(scores))
    assert summary["best_score"] == 0.5 and summary["best_step"] == 10
    # off (the default): step 0 is never scored
    trainer, step, _, _, _ = _toy_trainer(None, steps=20)
    calls = []
    trainer.fit(step, lambda: calls.append(trainer.step) or 0.0)
    assert calls == [5, 10, 15, 20]


def test_select_margin_keeps_the_start_unless_beaten_by_margin_times_its_spread():
    """train.select_margin 2 with the start scoring 0.5 +- sd 0.05: the bar is 0.6 (by hand);
    0.58 and 0.59 (better than the start, not by the margin) do not replace it, 0.62 does, and
    later scores compete with the best as usual; without the margin 0.59 would have won."""

    def run(margin, scores):
        trainer, step, _, _, _ = _toy_trainer(
            None, steps=20, select_start=True, select_margin=margin
        )
        it = iter(scores)
        summary = trainer.fit(step, lambda: next(it))
        return trainer, summary

    kept = [(0.5, {"score_sd": 0.05}), 0.58, 0.55, 0.59, 0.3]
    trainer, summary = run(2.0, kept)
    assert summary["best_step"] == 0 and summary["best_score"] == 0.5
    assert trainer.start == {"score": 0.5, "sd": 0.05}
    assert trainer.history[0] == {"step": 0.0, "val_score": 0.5, "score_sd": 0.05}
    _, summary = run(0.0, kept)
    assert summary["best_step"] == 15 and summary["best_score"] == 0.59
    _, summary = run(2.0, [(0.5, {"score_sd": 0.05}), 0.58, 0.62, 0.61, 0.7])
    assert summary["best_step"] == 20 and summary["best_score"] == 0.7
    # a score that reports no spread: no margin (0.58 wins)
    _, summary = run(2.0, [0.5, 0.58, 0.55, 0.59, 0.3])
    assert summary["best_step"] == 15 and summary["best_score"] == 0.59


def test_select_margin_is_checkpointed(tmp_path):
    """A resumed run keeps the start's bar: killed after step 10, it still refuses 0.58."""
    scores = {0: (0.5, {"score_sd": 0.05}), 5: 0.3, 10: 0.3, 15: 0.58, 20: 0.4}
    trainer, step, _, _, _ = _toy_trainer(
        tmp_path / "run", steps=10, select_start=True, select_margin=2.0
    )
    trainer.fit(step, lambda: scores[trainer.step])
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    again, step, _, _, _ = _toy_trainer(
        tmp_path / "run", steps=20, select_start=True, select_margin=2.0
    )
    summary = again.fit(step, lambda: scores[again.step])
    assert again.resumed_from == 10 and again.start == {"score": 0.5, "sd": 0.05}
    assert summary["best_step"] == 0
    # resumed with the setting off, the checkpoint's bar no longer applies: 0.58 wins
    off, step, _, _, _ = _toy_trainer(tmp_path / "copy", steps=20)
    summary = off.fit(step, lambda: scores[off.step])
    assert off.resumed_from == 10 and summary["best_step"] == 15


def test_divergence_is_reported_at_the_first_recorded_step():
    trainer, _, evaluate, (_, g), make_step = _toy_trainer(None, steps=20, log_every=4)

    def nan_critic(rng):
        return torch.tensor(float("nan"), requires_grad=True), {"critic": torch.tensor(np.nan)}

    with pytest.raises(FloatingPointError, match="diverged at step 4"):
        trainer.fit(make_step(nan_critic, g), evaluate)


def test_losses_are_read_only_when_recorded():
    trainer, _, evaluate, (c, g), make_step = _toy_trainer(None, steps=12, log_every=4)
    trainer.fit(make_step(c, g), None)
    assert [int(r["step"]) for r in trainer.history] == [4, 8, 12]


def test_checkpoint_survives_a_kill_between_renames(tmp_path):
    folder = tmp_path / "checkpoint"
    save_checkpoint(folder, {"g": {"w": torch.ones(2)}}, {"step": 1})
    save_checkpoint(folder, {"g": {"w": torch.full((2,), 2.0)}}, {"step": 2})
    folder.rename(tmp_path / "checkpoint.old")  # as if killed after the first rename
    modules, state = load_checkpoint(folder)
    assert state["step"] == 2 and np.allclose(modules["g"]["w"].numpy(), 2.0)
    assert load_checkpoint(tmp_path / "nothing") is None


def _ramp_average(decay):
    """The EMA as `torch.optim.swa_utils.AveragedModel` computes it with the ramp."""

    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        torch._foreach_lerp_(ema_params, params, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update


def test_ema_is_averaged_models_ramp_bit_for_bit_and_across_a_load():
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ours, theirs = ema_of(net, 0.999), AveragedModel(net, multi_avg_fn=_ramp_average(0.999))
    for step in range(6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(5, 3))  # the running statistics (buffers) move too
        ours.update_parameters(net)
        theirs.update_parameters(net)
        if step == 2:  # a resumed run: the count comes from the loaded buffer
            ours = ema_of(net, 0.999)
            ours.load_state_dict(theirs.state_dict())
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert int(ours.n_averaged) == 6
    # a load into an EMA that has counted already takes the loaded count
    ours = ema_of(net, 0.999)
    ours.update_parameters(net)
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ours.update_parameters(net)
    theirs.update_parameters(net)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_select_margin_needs_select_start():
    """A margin over the untrained weights means nothing unless they are a candidate."""
    with pytest.raises(ValueError, match="select_margin.*needs train.select_start=true"):
        TrainConfig(select_margin=2.0)
    assert TrainConfig(select_margin=2.0, select_start=True).select_margin == 2.0
