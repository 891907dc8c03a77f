import pytest
import torch

from eqspike.core.if_population import IFPopulation, simulate_constant_current
from eqspike.core.neurons import (
    NeuronConfig,
    equilibrium_rate,
    fire,
    time_step_rate,
)


@pytest.mark.parametrize("rounding, bound", [("round", 0.5), ("trunc", 1.0)])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("time_steps", [1, 2, 7, 8, 32, 100])
def test_if_rate_within_its_bound_of_clamp(signed, time_steps, rounding, bound):
    """|a(T) - clamp(I / V_th)| <= 1 / (2T) for the rounding neuron, < 1 / T for the truncating one."""
    torch.manual_seed(time_steps)
    neuron = NeuronConfig(threshold=0.7, signed=signed, rounding=rounding)
    current = torch.empty(20_000, dtype=torch.float64).uniform_(-2.5, 2.5)
    result = simulate_constant_current(current, time_steps, neuron)
    error = (result.rates - equilibrium_rate(current, neuron)).abs()
    assert error.max() <= bound / time_steps + 1e-12
    if rounding == "trunc":
        assert error.max() < bound / time_steps
    # The bound is tight: some neuron comes close to it, so the check above is not vacuous.
    if time_steps > 1:
        assert error.max() > 0.9 * bound / time_steps


@pytest.mark.parametrize("rounding", ["round", "trunc"])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("time_steps", [1, 2, 3, 4, 8, 17])
def test_constant_current_rate_is_the_T_step_quantizer_exactly(signed, time_steps, rounding):
    """After T steps of a constant current the rate is Q_T(I) = clamp(round(T I / V_th) / T, lo, 1)
    (trunc for the truncating neuron), for every neuron, both drives."""
    torch.manual_seed(100 + time_steps)
    neuron = NeuronConfig(threshold=0.37, signed=signed, rounding=rounding)
    current = torch.empty(4_000, dtype=torch.float64).uniform_(-0.6, 0.6)
    expected = time_step_rate(current, neuron, time_steps)
    assert torch.equal(simulate_constant_current(current, time_steps, neuron).rates, expected)
    ideal = IFPopulation(neuron)
    for _ in range(time_steps):
        ideal.step_ideal(current)
    assert torch.equal(ideal.rate, expected)
    # by hand, T = 4, V_th = 1: 0.13 -> round(0.52) = 1 spike (trunc: 0); 0.37 -> round(1.48) = 1; 0.38 -> 2
    by_hand = time_step_rate(torch.tensor([0.13, 0.37, 0.38, -0.13, 2.0]), NeuronConfig(rounding=rounding, signed=signed), 4)
    if rounding == "round":
        assert by_hand.tolist() == [0.25, 0.25, 0.5, -0.25 if signed else 0.0, 1.0]
    else:
        assert by_hand.tolist() == [0.0, 0.25, 0.25, 0.0, 1.0]


def test_quantizer_gradient_is_straight_through_inside_the_range():
    """dQ/dI = 1/V_th where lo <= Q <= 1, 0 where clipped; with a learnable threshold and
    v = theta Q(F / theta), dv/dtheta = Q - F / theta inside (LSQ) and the clip level outside."""
    neuron = NeuronConfig(threshold=1.0, signed=True)
    current = torch.tensor([0.1, 0.3, -0.55, 1.7, -3.0], requires_grad=True)
    time_step_rate(current, NeuronConfig(threshold=2.0), 4).sum().backward()
    assert current.grad.tolist() == [0.5, 0.5, 0.5, 0.5, 0.0]  # -3/2 is clipped at -1
    theta = torch.tensor(0.8, requires_grad=True)
    F = torch.tensor([0.05, 0.45, -0.9, 2.0])  # F / theta = 0.0625, 0.5625, -1.125, 2.5
    rate = time_step_rate(F / theta, neuron, 4)
    assert rate.tolist() == [0.0, 0.5, -1.0, 1.0]
    (theta * rate).sum().backward()
    # inside: Q - F / theta = (0 - 0.0625) + (0.5 - 0.5625); clipped: -1 and +1 (the last two)
    assert theta.grad.item() == pytest.approx((0.0 - 0.0625) + (0.5 - 0.5625) + (-1.0) + 1.0)


@pytest.mark.parametrize("leak", [0.9, 0.5])
def test_lif_weighted_rate_within_one_over_normaliser(leak):
    torch.manual_seed(0)
    neuron = NeuronConfig(threshold=1.0, leak=leak, signed=True)
    current = torch.empty(5_000).uniform_(-2.0, 2.0)
    for time_steps in (4, 16, 64):
        result = simulate_constant_current(current, time_steps, neuron)
        normaliser = (1 - leak**time_steps) / (1 - leak)
        error = (result.rates - equilibrium_rate(current, neuron)).abs()
        assert error.max() < 1.0 / normaliser


def test_trajectory_obeys_the_bound_at_every_step():
    torch.manual_seed(1)
    neuron = NeuronConfig()
    current = torch.randn(3, 50)
    result = simulate_constant_current(current, 40, neuron, record_trajectory=True)
    assert result.trajectory.shape == (40, 3, 50)
    assert torch.equal(result.trajectory[-1], result.rates)
    ideal = equilibrium_rate(current, neuron)
    for t in range(1, 41):
        assert (result.trajectory[t - 1] - ideal).abs().max() < 1.0 / t


@pytest.mark.parametrize("hysteresis", [0.25, 0.5])
def test_hysteresis_keeps_constant_current_counts_and_bounds_a_moving_one(hysteresis):
    """Constant current: exactly the rounding neuron's counts (no reversal ever). A current that settles
    like an upstream rate estimate, I(t) = b + n_t / t with |b|, |n_t| <= 0.3, so that the cumulative
    current t I(t) moves by at most 0.9 thresholds a step (one spike can follow): the rate stays within
    (1/2 + h) / t of clamp(I(t)) at every t, and far fewer spikes cancel than without hysteresis."""
    torch.manual_seed(7)
    plain, sticky = NeuronConfig(), NeuronConfig(hysteresis=hysteresis)
    constant = torch.empty(5_000, dtype=torch.float64).uniform_(-1.5, 1.5)
    for T in (1, 3, 4, 9):
        assert torch.equal(simulate_constant_current(constant, T, sticky).rates, time_step_rate(constant, plain, T))
    base = torch.empty(5_000, dtype=torch.float64).uniform_(-0.3, 0.3)
    populations = {"plain": IFPopulation(plain), "sticky": IFPopulation(sticky)}
    reversals, last = {k: 0 for k in populations}, {k: torch.zeros_like(base) for k in populations}
    for t in range(1, 65):
        current = base + torch.empty_like(base).uniform_(-0.3, 0.3) / t
        for name, population in populations.items():
            spikes = population.step_ideal(current)
            reversals[name] += int(((spikes * last[name]) < 0).sum())
            last[name] = torch.where(spikes != 0, spikes, last[name])
        error = (populations["sticky"].rate - equilibrium_rate(current, sticky)).abs()
        assert error.max() <= (0.5 + hysteresis) / t + 1e-12, t
    assert reversals["sticky"] < 0.5 * reversals["plain"], reversals
    spikes = {k: float(p.spike_count.sum()) for k, p in populations.items()}
    assert spikes["sticky"] < spikes["plain"], spikes


@pytest.mark.parametrize(
    "neuron, seed, steps",
    [
        (NeuronConfig(threshold=0.6, hysteresis=0.5), 8, 40),
        (NeuronConfig(threshold=0.6, levels=4), 9, 30),  # burst spikes
    ],
    ids=["hysteresis", "burst"],
)
def test_both_drives_fire_alike_under_a_moving_current(neuron, seed, steps):
    """step (integrating the increments into a membrane) and step_ideal (closed form) fire alike, with
    hysteresis and with burst spikes, and hold the same membrane."""
    torch.manual_seed(seed)
    fast, slow = IFPopulation(neuron), IFPopulation(neuron)
    previous = 0.0
    for t in range(1, steps + 1):
        current = torch.randn(1_000, dtype=torch.float64) * 0.5
        s_fast, s_slow = fast.step_ideal(current), slow.step(t * current - previous)
        previous = t * current
        assert torch.equal(s_fast, s_slow), t
        assert torch.allclose(fast.membrane, slow.membrane, atol=1e-9), t


def test_spike_values_and_counts():
    u = torch.tensor([-3.0, -1.0, -0.99, -0.5, -0.49, 0.0, 0.49, 0.5, 0.99, 1.0, 3.0])
    trunc, rounding = NeuronConfig(rounding="trunc"), NeuronConfig(rounding="round")
    assert fire(u, trunc).tolist() == [-1, -1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert fire(u, NeuronConfig(signed=False, rounding="trunc")).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert fire(u, rounding).tolist() == [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1]
    assert fire(u, NeuronConfig(signed=False)).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    for neuron in (trunc, rounding):
        result = simulate_constant_current(torch.tensor([-1.0, 0.5, 0.0]), 10, neuron)
        assert result.spike_count.tolist() == [10.0, 5.0, 0.0]
    # burst spikes, B = 4, V_th = 1: one spike per 0.25, the first at 0.125, at most 4 a step
    assert fire(torch.tensor([-2.0, -0.13, 0.12, 0.13, 0.38, 5.0]), NeuronConfig(levels=4)).tolist() == [
        -4.0,
        -1.0,
        0.0,
        1.0,
        2.0,
        4.0,
    ]


def test_ideal_drive_of_an_affine_map_is_the_synaptic_current():
    """For F(a) = W a + b the increment of the cumulative ideal current is W s(t) + b."""
    torch.manual_seed(2)
    neuron = NeuronConfig()
    weight, bias = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    source = torch.randn(5, dtype=torch.float64)
    upstream, ideal_driven, synapse_driven = (IFPopulation(neuron) for _ in range(3))
    for _ in range(50):
        spikes = upstream.step(source)
        s_ideal = ideal_driven.step_ideal(weight @ upstream.rate + bias)
        s_synapse = synapse_driven.step(weight @ spikes + bias)
        assert torch.equal(s_ideal, s_synapse)
        assert torch.allclose(ideal_driven.membrane, synapse_driven.membrane, atol=1e-9)


@pytest.mark.parametrize("rounding", ["round", "trunc"])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("leak", [1.0, 0.8])
@pytest.mark.parametrize("threshold", [1.0, 0.37])
def test_closed_form_ideal_drive_matches_integrating_the_increments(signed, leak, threshold, rounding):
    """step_ideal keeps no membrane: it fires from u = Z F - gamma V_th R directly. That must give the
    spikes of integrating I(t) = Z(t) F(t) - gamma Z(t-1) F(t-1) into a membrane (step), for IF and
    LIF, signed and not, eager and differentiable, with a current that changes every step."""
    torch.manual_seed(3)
    neuron = NeuronConfig(threshold=threshold, leak=leak, signed=signed, rounding=rounding)
    currents = torch.randn(60, 4, 200, dtype=torch.float64) * 1.5
    fast, slow, bptt = IFPopulation(neuron), IFPopulation(neuron), IFPopulation(neuron, differentiable=True)
    previous, normaliser, mismatches = 0.0, 0.0, 0
    for current in currents:
        normaliser = leak * normaliser + 1.0
        increment = normaliser * current - leak * previous
        previous = normaliser * current
        s_fast, s_slow, s_bptt = fast.step_ideal(current), slow.step(increment), bptt.step_ideal(current)
        mismatches += int((s_fast != s_slow).sum())
        assert torch.equal(s_fast, s_bptt)
        assert set(s_fast.unique().tolist()) <= ({-1.0, 0.0, 1.0} if signed else {0.0, 1.0})
    assert mismatches == 0  # in float64 the two roundings never straddle a threshold here
    assert torch.equal(fast.spike_count, slow.spike_count)
    assert torch.allclose(fast.rate, slow.rate, atol=1e-12)
    assert torch.allclose(fast.membrane, slow.membrane, atol=1e-9)


def test_surrogate_spike_has_straight_through_window_gradient():
    neuron = NeuronConfig(threshold=0.5, signed=True)
    u = torch.tensor([-1.5, -0.9, 0.2, 0.6, 0.99, 1.2], requires_grad=True)
    spikes = fire(u, neuron, surrogate=True)
    assert spikes.tolist() == [-1, -1, 0, 1, 1, 1]
    spikes.sum().backward()
    # 1/V_th inside |u| < 2 V_th = 1.0, zero outside.
    assert u.grad.tolist() == [0.0, 2.0, 2.0, 2.0, 2.0, 0.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(threshold=0.0), r"threshold=0\.0 .*> 0"),
        (dict(threshold=-1.0), r"threshold=-1\.0 .*> 0"),
        (dict(leak=0.0), r"leak=0\.0 .*\(0\.0, 1\.0\]"),
        (dict(leak=1.5), r"leak=1\.5 .*\(0\.0, 1\.0\]"),
        (dict(signed="yes"), r"signed='yes' .*True or False"),
    ],
)
def test_bad_neuron_parameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuronConfig(**kwargs)


@pytest.mark.parametrize("time_steps", [0, -3, 2.5, True])
def test_bad_time_steps_are_named(time_steps):
    with pytest.raises(ValueError, match=rf"time_steps={time_steps!r} .*integer >= 1"):
        simulate_constant_current(torch.zeros(3), time_steps)


@pytest.mark.parametrize("rounding", ["round", "trunc"])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("time_steps", [1, 2, 4, 7])
def test_burst_neuron_is_the_quantizer_of_levels_times_T_steps(rounding, signed, levels, time_steps):
    """Up to B spikes of V_th / B a step: after T steps of a constant current the rate is Q_{BT}(I),
    exactly, for both drives; it fires B T |a| spikes, up to B in one step; within 1 / (2 B T) of the clamp."""
    torch.manual_seed(levels * 10 + time_steps)
    neuron = NeuronConfig(threshold=0.37, signed=signed, rounding=rounding, levels=levels)
    current = torch.empty(4_000, dtype=torch.float64).uniform_(-0.6, 0.6)
    expected = time_step_rate(current, NeuronConfig(threshold=0.37, signed=signed, rounding=rounding), levels * time_steps)
    assert torch.equal(time_step_rate(current, neuron, time_steps), expected)
    result = simulate_constant_current(current, time_steps, neuron)
    assert torch.equal(result.rates, expected)
    assert torch.allclose(result.spike_count, (expected * levels * time_steps).abs())
    ideal = IFPopulation(neuron)
    for t in range(time_steps):
        spikes = ideal.step_ideal(current)
        assert spikes.abs().max() <= levels
        if t == 0:
            assert spikes.abs().max() == levels  # a burst: more than one spike in a step
    assert torch.equal(ideal.rate, expected) and torch.allclose(ideal.spike_count, result.spike_count)
    if rounding == "round":
        error = (result.rates - equilibrium_rate(current, neuron)).abs().max()
        assert 0.9 / (2 * levels * time_steps) < error <= 1 / (2 * levels * time_steps) + 1e-12


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(levels=0), r"levels=0 .*integer >= 1"),
        (dict(levels=2.5), r"levels=2\.5 .*integer >= 1"),
        (dict(levels=2, hysteresis=0.5), r"levels=2 \(burst spikes\) needs hysteresis=0"),
    ],
)
def test_bad_burst_levels_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuronConfig(**kwargs)
    with pytest.raises(ValueError, match="surrogate"):
        fire(torch.zeros(2), NeuronConfig(levels=2), surrogate=True)
