"""Stacking as accelerated gradient descent (eval/paper/theory.py, eval/paper/reproduce.py): small fixed-seed instances."""

import json
import math

import numpy as np
import pytest
import torch

from eval.paper import theory

SEEDS = (0, 1, 2)


# ----------------------------------------------------------------------------- building blocks


def test_nesterov_beta_is_nesterovs_for_one_step_and_smaller_for_more():
    for kappa in (4.0, 100.0, 1e4):
        assert math.isclose(theory.nesterov_beta(kappa), (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1), rel_tol=1e-12)
        # k steps per stage contract more, so the stage problem is better conditioned: less momentum.
        assert theory.nesterov_beta(kappa, 4) < theory.nesterov_beta(kappa)
    np.testing.assert_allclose(theory.nesterov_beta(np.array([4.0, 100.0])), [1 / 3, 9 / 11])
    with pytest.raises(ValueError, match="kappa must be >= 1, got 0.5"):
        theory.nesterov_beta(0.5)


def test_momentum_per_init():
    assert [theory.momentum("copy_schedule", t) for t in range(4)] == [0.0, 0.0, 0.25, 0.4]
    assert theory.momentum("copy", 0) == 0.0 and theory.momentum("copy", 5) == 1.0
    assert theory.momentum("copy_beta", 3, beta=0.7) == 0.7
    assert theory.momentum("zero", 3, beta=0.7) == 0.0
    with pytest.raises(ValueError, match="init must be one of"):
        theory.momentum("copy_last", 1)
    with pytest.raises(ValueError, match="needs beta"):
        theory.momentum("copy_beta", 1)


def test_problems_have_the_requested_condition_number():
    ls = theory.make_least_squares(300.0, SEEDS)
    np.testing.assert_allclose(ls.kappa_eff, 300.0, rtol=1e-8)
    np.testing.assert_allclose(ls.grad(ls.w_opt), 0.0, atol=1e-9)
    res = theory.make_residual_regression(300.0, SEEDS, radius=0.4)
    eig = np.linalg.eigvalsh(res.covariance)
    np.testing.assert_allclose(eig[:, -1] / eig[:, 0], 300.0, rtol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(res.target - np.eye(10), 2, axis=(1, 2)), 0.4, rtol=1e-10)
    np.testing.assert_allclose(res.excess(res.target), 0.0, atol=1e-15)
    lg = theory.make_logistic(300.0, SEEDS)
    np.testing.assert_allclose(lg.grad(lg.w_opt), 0.0, atol=1e-9)
    assert np.all(lg.excess(lg.start()) > 0) and np.all(lg.kappa_eff > 300.0)  # curvature <= 1/4 at the optimum
    with pytest.raises(ValueError, match="kappa must be >= 1, got 0.5"):
        theory.make_least_squares(0.5, SEEDS)
    with pytest.raises(ValueError, match="radius must be in"):
        theory.make_residual_regression(10.0, SEEDS, radius=1.5)


def test_fit_exponent_recovers_a_power_law_and_skips_unreached():
    kappas = [10.0, 100.0, 1000.0, 1e4]
    assert math.isclose(theory.fit_exponent(kappas, [3 * k**0.7 for k in kappas]), 0.7, rel_tol=1e-9)
    assert math.isclose(theory.fit_exponent(kappas, [3 * k**0.5 for k in kappas[:3]] + [None]), 0.5, rel_tol=1e-9)
    assert math.isnan(theory.fit_exponent(kappas, [5, None, None, None]))


def test_stages_to_target_and_to_stay():
    target = 1e-3
    rel = np.array([
        [1.0, 0.1, 5e-4, 2e-3, 1e-4, 1e-4, 1e-4, 1e-4],  # dips at 2, comes back, stays from 4
        [1.0, 0.5, 0.1, 0.05, 0.01, 0.01, 0.01, 0.01],  # never reaches
        [1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-4, 1e-4, 2e-3],  # back above at the very end
    ])
    assert theory.stages_to_target(rel, target) == [2, None, 3]
    # Seed 0 stays from stage 4; the run goes to 7 >= 1.5 * 4, so that is shown. Seed 2: never stays.
    assert theory.stages_to_stay(rel, target) == [4, None, None]
    assert theory.stages_to_stay(rel[:, :6], target)[0] is None  # 5 < 1.5 * 4: not yet shown


# ----------------------------------------------------------------------------- the correspondence


@pytest.mark.parametrize("setting", ["least_squares", "logistic"])
def test_one_inner_step_is_exactly_explicit_gd_and_nesterov(setting):
    problem = theory.make_problem(setting, 100.0, SEEDS)
    beta = theory.nesterov_beta(problem.kappa_eff)
    stages = 150
    # Relative excess is O(1) at the start; atol covers rounding of L(w) - L* once it is tiny.
    close = {"rtol": 1e-9, "atol": 1e-12}
    zero = theory.stagewise_additive(problem, "zero", max_stages=stages)
    np.testing.assert_allclose(zero, theory.gradient_descent(problem, stages), **close)
    stagewise = theory.stagewise_additive(problem, "copy_beta", max_stages=stages, beta=beta)
    np.testing.assert_allclose(stagewise, theory.nesterov(problem, stages, beta), **close)
    schedule = theory.stagewise_additive(problem, "copy_schedule", max_stages=stages)
    np.testing.assert_allclose(schedule, theory.nesterov(problem, stages, lambda t: max(t - 1, 0) / (t + 2)), **close)
    # And momentum matters: the accelerated run is far ahead of plain GD by the end.
    assert np.all(stagewise[:, -1] < 0.01 * theory.gradient_descent(problem, stages)[:, -1])


def test_zero_init_with_k_inner_steps_is_gd_sampled_every_k_steps():
    problem = theory.make_least_squares(50.0, SEEDS)
    stagewise = theory.stagewise_additive(problem, "zero", max_stages=40, inner_steps=3)
    np.testing.assert_allclose(stagewise, theory.gradient_descent(problem, 120)[:, ::3], rtol=1e-12)


def test_random_init_noise_floor_matches_its_prediction():
    problem = theory.make_least_squares(100.0, SEEDS)
    for floor in (1e-4, 1e-2):
        rel = theory.stagewise_additive(problem, "random", max_stages=3000, random_floor=floor)
        plateau = rel[:, -500:].mean(axis=1)
        assert np.all((plateau > 0.3 * floor) & (plateau <= floor))  # the formula is an upper bound
    assert theory.stages_to_target(rel, 1e-3) == [None, None, None]  # floor 1e-2 stalls above 1e-3


def _torch_loss(f, a, cov):
    e = f - a
    return 0.5 * torch.einsum("ij,jk,ik->", e, cov, e)


def test_residual_runs_match_torch_autograd():
    """Stagewise growth and full-depth GD against the same updates with gradients from autograd."""
    problem = theory.make_residual_regression(30.0, [4], dim=6)
    a = torch.tensor(problem.target[0])
    cov = torch.tensor(problem.covariance[0])
    l0 = _torch_loss(torch.eye(6, dtype=torch.float64), a, cov)
    beta = 0.6
    # Stagewise, copy_beta, 2 inner steps per stage.
    f, last, rel = torch.eye(6, dtype=torch.float64), torch.zeros(6, 6, dtype=torch.float64), [1.0]
    for t in range(6):
        w = (beta if t > 0 else 0.0) * last
        eta = 1.0 / torch.linalg.eigvalsh(f @ cov @ f.T)[-1]
        for _ in range(2):
            w = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_torch_loss((torch.eye(6) + w) @ f, a, cov), w)
            w = w - eta * g
        f, last = ((torch.eye(6) + w) @ f).detach(), w.detach()
        rel.append(float(_torch_loss(f, a, cov) / l0))
    ours = theory.stagewise_residual(problem, "copy_beta", max_stages=6, inner_steps=2, beta=beta)
    torch.testing.assert_close(torch.tensor(ours[0]), torch.tensor(rel, dtype=torch.float64))
    # Full-depth GD on 4 layers from W = 0.
    ws = [torch.zeros(6, 6, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    eta = 1.0 / (4 * problem.smoothness[0])
    rel = []
    for _ in range(8):
        f = torch.eye(6, dtype=torch.float64)
        for w in ws:
            f = (torch.eye(6) + w) @ f
        loss = _torch_loss(f, a, cov)
        rel.append(float(loss.detach() / l0))
        grads = torch.autograd.grad(loss, ws)
        ws = [(w - eta * g).detach().requires_grad_(True) for w, g in zip(ws, grads)]
    ours = theory.full_depth_gd(problem, 4, max_steps=7)
    torch.testing.assert_close(torch.tensor(ours[0]), torch.tensor(rel, dtype=torch.float64))


# ----------------------------------------------------------------------------- the claims (issue item 6)


@pytest.mark.parametrize("setting", ["least_squares", "logistic", "residual"])
def test_beta_scaled_copy_reaches_the_target_in_fewer_stages_than_zero_init(setting):
    problem = theory.make_problem(setting, 300.0, SEEDS)
    beta = theory.nesterov_beta(problem.kappa_eff)
    zero = theory.stages_to_target(theory.run_stagewise(problem, "zero", max_stages=5000, target=1e-3), 1e-3)
    copy_beta = theory.stages_to_target(
        theory.run_stagewise(problem, "copy_beta", max_stages=5000, beta=beta, target=1e-3), 1e-3
    )
    assert None not in zero and None not in copy_beta
    # sqrt(300) ~ 17 versus 300: at least 4x fewer stages on every seed.
    for z, c in zip(zero, copy_beta):
        assert c * 4 < z, (setting, zero, copy_beta)


@pytest.mark.parametrize("setting", ["least_squares", "residual"])
def test_fitted_exponent_of_beta_scaled_copy_is_clearly_below_zero_inits(setting):
    cfg = theory.SweepConfig(setting, kappas=(10.0, 100.0, 1000.0), seeds=SEEDS, inits=("zero", "copy_beta"))
    fits = {name: m["fit"]["reach"] for name, m in theory.rate_sweep(cfg)["methods"].items()}
    assert fits["zero"]["mean"] > 0.85 and fits["copy_beta"]["mean"] < 0.6, fits
    assert fits["zero"]["mean"] - fits["copy_beta"]["mean"] > 0.3, fits
    for z, c in zip(fits["zero"]["exponents"], fits["copy_beta"]["exponents"]):
        assert z - c > 0.2, fits  # on every seed, not only on average


def test_plain_copy_is_not_accelerated_it_stays_below_target_about_twice_as_late_as_zero():
    # Momentum 1 damps each direction by sqrt(1 - lam/L) per stage instead of 1 - lam/L.
    problem = theory.make_least_squares(1000.0, SEEDS)
    kw = {"max_stages": 40000, "target": 1e-3, "until": "stay"}
    zero = theory.stages_to_stay(theory.stagewise_additive(problem, "zero", **kw), 1e-3)
    copy = theory.stages_to_stay(theory.stagewise_additive(problem, "copy", **kw), 1e-3)
    for z, c in zip(zero, copy):
        assert 1.5 * z < c < 2.5 * z, (zero, copy)


# ----------------------------------------------------------------------------- config and command


def test_sweep_config_names_the_bad_field():
    with pytest.raises(ValueError, match=r"kappas needs at least 2 values to fit an exponent, got \[10.0\]"):
        theory.SweepConfig("least_squares", kappas=(10.0,), seeds=SEEDS)
    with pytest.raises(ValueError, match=r"inits\[1\] must be one of .*, got 'ones'"):
        theory.SweepConfig("least_squares", kappas=(10.0, 100.0), seeds=SEEDS, inits=("zero", "ones"))
    with pytest.raises(ValueError, match=r"kappas\[1\] must be >= 1, got 0.5"):
        theory.SweepConfig("residual", kappas=(10.0, 0.5), seeds=SEEDS)
    with pytest.raises(ValueError, match="full_depth_max_kappa applies to setting 'residual' only"):
        theory.SweepConfig("logistic", kappas=(10.0, 100.0), seeds=SEEDS, full_depth_max_kappa=100.0)
    with pytest.raises(ValueError, match="setting must be one of"):
        theory.SweepConfig("boosting", kappas=(10.0, 100.0), seeds=SEEDS)


def test_paper_command_writes_results_table_and_plots(tmp_path):
    from eval.paper import reproduce as paper

    results = paper.main(["--out", str(tmp_path), "--kappas", "10", "100", "--seeds", "2"])
    for name in ("paper_results.json", "paper_table.md", "paper_curves.png", "paper_curves.svg",
                 "paper_rates.png", "paper_rates.svg"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "paper_results.json").read_text())
    assert saved["settings"].keys() == {"least_squares", "least_squares_k4", "logistic", "residual"}
    for setting in saved["settings"].values():
        for init in theory.INITS:
            m = setting["methods"][init]
            assert set(m["stages_to_target"]) == {"10", "100"} and len(m["stages_to_target"]["10"]) == 2
            assert m["exponent"] is not None and m["exponent_std"] is not None
        assert setting["methods"]["copy_beta"]["exponent"] < setting["methods"]["zero"]["exponent"] - 0.2
    assert {"gd", "nesterov", "full_depth_gd"} <= saved["settings"]["residual"]["methods"].keys()
    for diffs in saved["equivalence"]["max_abs_diff_relative_excess"].values():
        assert max(diffs.values()) < 1e-10
    assert saved == json.loads(json.dumps(results))
    assert "| copy_beta | 1/2 (Nesterov) |" in (tmp_path / "paper_table.md").read_text()
