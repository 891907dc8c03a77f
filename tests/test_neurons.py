import pytest
import torch

from eqspike.neurons import (
    IFPopulation,
    NeuronConfig,
    equilibrium_rate,
    fire,
    simulate_constant_current,
)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("time_steps", [1, 2, 7, 8, 32, 100])
def test_if_rate_within_one_over_T_of_clamp(signed, time_steps):
    torch.manual_seed(time_steps)
    neuron = NeuronConfig(threshold=0.7, signed=signed)
    current = torch.empty(20_000).uniform_(-2.5, 2.5)
    result = simulate_constant_current(current, time_steps, neuron)
    error = (result.rates - equilibrium_rate(current, neuron)).abs()
    assert error.max() < 1.0 / time_steps
    # The bound is tight: some neuron comes close to it, so the check above is not vacuous.
    if time_steps > 1:
        assert error.max() > 0.5 / time_steps


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


def test_spike_values_and_counts():
    u = torch.tensor([-3.0, -1.0, -0.99, 0.0, 0.99, 1.0, 3.0])
    assert fire(u, NeuronConfig(signed=True)).tolist() == [-1, -1, 0, 0, 0, 1, 1]
    assert fire(u, NeuronConfig(signed=False)).tolist() == [0, 0, 0, 0, 0, 1, 1]
    result = simulate_constant_current(torch.tensor([-1.0, 0.5, 0.0]), 10, NeuronConfig(signed=True))
    assert result.spike_count.tolist() == [10.0, 5.0, 0.0]


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


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("leak", [1.0, 0.8])
@pytest.mark.parametrize("threshold", [1.0, 0.37])
def test_closed_form_ideal_drive_matches_integrating_the_increments(signed, leak, threshold):
    """step_ideal keeps no membrane: it fires from u = Z F - gamma V_th R directly. That must give the
    spikes of integrating I(t) = Z(t) F(t) - gamma Z(t-1) F(t-1) into a membrane (step), for IF and
    LIF, signed and not, eager and differentiable, with a current that changes every step."""
    torch.manual_seed(3)
    neuron = NeuronConfig(threshold=threshold, leak=leak, signed=signed)
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
