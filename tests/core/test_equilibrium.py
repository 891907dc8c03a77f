import pytest
import torch

from eqspike.core.checks import (
    StackedSpikingNetwork,
    implicit_gradient,
    implicit_gradient_check,
    readout_loss,
    relative_error,
    unrolled_gradient,
)
from eqspike.core.equilibrium import EquilibriumConfig, EquilibriumLayer
from eqspike.core.rate_map import Population, RateMap
from eqspike.core.simulation import simulate


# ---------------------------------------------------------------- implicit gradients (issue 5b)
@pytest.mark.parametrize("solver", ["anderson", "broyden", "fixed_point_iter"])
def test_implicit_gradient_with_feedback_matches_unrolled_reference(solver):
    assert implicit_gradient_check(solver=solver) < 1e-4


def test_phantom_gradient_is_only_an_approximation():
    # The same check fails for a 1-step phantom gradient: the reference check can tell them apart.
    assert implicit_gradient_check(backward="phantom") > 1e-3


def test_feedback_makes_the_jacobian_non_trivial():
    net = StackedSpikingNetwork(16, 4, feedback=True, dtype=torch.float64)
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        out = EquilibriumLayer(EquilibriumConfig(tol=1e-10, max_iter=200))(net.rate_map(x))
        one_sweep = net.rate_map(x).sweep()
    assert out.stats.iterations > 5
    assert out.stats.residual < 1e-8
    # The fixed point differs from a single feed-forward sweep from the zero state.
    assert (out.rates["p3"] - one_sweep["p3"]).abs().max() > 1e-3


def test_without_feedback_gradient_is_one_backward_through_the_sweep():
    net = StackedSpikingNetwork(12, 5, feedback=False, dtype=torch.float64)
    x = torch.randn(2, 4, 12, dtype=torch.float64)
    gradients, _ = implicit_gradient(net, x, EquilibriumConfig())
    assert relative_error(gradients, unrolled_gradient(net, x)) < 1e-12


def test_gradients_in_eval_mode_and_backward_stats():
    # A model in eval mode (as from_pretrained returns it) must still get the implicit gradient.
    net = StackedSpikingNetwork(16, 4, feedback=True, dtype=torch.float64)
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    layer = EquilibriumLayer(EquilibriumConfig(tol=1e-12, max_iter=200, backward_tol=1e-12, backward_max_iter=200))
    layer.eval()
    out = layer(net.rate_map(x.requires_grad_()))
    readout_loss(out.rates).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert out.stats.backward_iterations is not None and out.stats.backward_iterations > 1
    assert out.stats.backward_residual < 1e-8


def test_simulate_forward_returns_spike_rates_with_implicit_gradient():
    net = StackedSpikingNetwork(16, 4, feedback=True, dtype=torch.float64)
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    layer = EquilibriumLayer(EquilibriumConfig(forward="simulate", time_steps=16))
    out = layer(net.rate_map(x))
    with torch.no_grad():
        spikes = simulate(net.rate_map(x), 16)
    for name, rate in out.rates.items():
        assert torch.equal(rate.detach(), spikes.rates[name])
        # Spike rates of a 16-step simulation are multiples of 1/16.
        assert torch.allclose(rate.detach() * 16, (rate.detach() * 16).round())
    readout_loss(out.rates).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_anchored_sweep_has_the_given_values_and_the_local_gradients_there():
    """a_l = anchor_l + Phi_l(a_in) - sg(Phi_l(a_in)): on a two-population chain a = clamp(x W1),
    b = clamp(a W2), the gradient of sum(g b) is the chain rule with every clamp's window taken at the
    anchored rates (not at the map's own fixed point), worked out by hand."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    w1 = (0.8 * torch.randn(4, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    w2 = (0.8 * torch.randn(6, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    rate_map = RateMap([Population("a", (), lambda: x @ w1), Population("b", ("a",), lambda a: a @ w2)])
    anchor = {
        "a": torch.rand(5, 6, generator=gen, dtype=torch.float64) * 2 - 1,
        "b": torch.rand(5, 3, generator=gen, dtype=torch.float64) * 2 - 1,
    }
    out = rate_map.anchored_sweep(anchor)
    assert torch.equal(out["a"].detach(), anchor["a"]) and torch.equal(out["b"].detach(), anchor["b"])
    (out["b"] * g).sum().backward()
    with torch.no_grad():
        inside_b = ((anchor["a"] @ w2).abs() <= 1).double()
        inside_a = ((x @ w1).abs() <= 1).double()
        grad_w2 = anchor["a"].T @ (g * inside_b)
        grad_w1 = x.T @ (((g * inside_b) @ w2.T) * inside_a)
        at_fixed_point = rate_map.sweep()["a"].T @ (g * ((rate_map.sweep()["b"]).abs() < 1).double())
    assert torch.allclose(w2.grad, grad_w2) and torch.allclose(w1.grad, grad_w1)
    assert not torch.allclose(w2.grad, at_fixed_point)  # where the gradient is taken matters


@pytest.mark.parametrize("time_steps", [1, 4])
def test_the_last_simulation_step_carries_the_anchored_sweeps_gradient(time_steps):
    """simulate(anchor_last_step=True) (the training forward of a feed-forward student): the same rates
    as the simulation, and the same gradients as an anchored sweep at them, bit for bit, without the
    sweep; refused with feedback."""
    net = StackedSpikingNetwork(16, 3, feedback=False, seed=2)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    g = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    rate_map = net.rate_map(x)
    last = rate_map.populations[-1].name
    reference = rate_map.anchored_sweep(simulate(rate_map, time_steps, count_spikes=False).rates)
    (reference[last] * g).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    result = simulate(rate_map, time_steps, count_spikes=False, anchor_last_step=True)
    for name in reference:
        assert torch.equal(result.anchored[name].detach(), reference[name].detach()), name
        assert torch.equal(result.rates[name], reference[name].detach()), name
    (result.anchored[last] * g).sum().backward()
    assert all(torch.equal(p.grad, e) for p, e in zip(net.parameters(), expected))
    assert any(e.abs().sum() > 0 for e in expected)
    with pytest.raises(ValueError, match="feed-forward"):
        simulate(StackedSpikingNetwork(16, 3, feedback=True).rate_map(x), 2, anchor_last_step=True)


# ---------------------------------------------------------------- convergence of the spiking net
@pytest.mark.parametrize("feedback", [False, True])
def test_spike_rates_converge_to_the_equilibrium_as_one_over_T(feedback):
    net = StackedSpikingNetwork(64, 4, feedback=feedback, feedback_gain=0.3)
    x = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(3))
    layer = EquilibriumLayer(EquilibriumConfig(tol=1e-6, max_iter=100))
    with torch.no_grad():
        rate_map = net.rate_map(x)
        star = layer(rate_map).rates
        errors = {T: {k: (v - star[k]).abs().mean().item() for k, v in simulate(rate_map, T).rates.items()} for T in (8, 64)}
    for name in star:  # affine, LayerNorm- and GELU-fed populations alike
        assert errors[64][name] < 0.25 * errors[8][name], (name, errors)


def test_trajectory_and_spike_counts():
    net = StackedSpikingNetwork(8, 3)
    x = torch.randn(2, 8)
    result = simulate(net.rate_map(x), 10, record_trajectory=True)
    assert result.trajectory["p2"].shape == (10, 2, 8)
    assert torch.equal(result.trajectory["p2"][-1], result.rates["p2"])
    for name, count in result.spike_counts.items():
        assert (count >= result.rates[name].abs() * 10 - 1e-5).all()
        assert (count <= 10).all()
    # Without counting the rates are the same spike for spike, and no counts are returned.
    uncounted = simulate(net.rate_map(x), 10, count_spikes=False)
    assert uncounted.spike_counts == {}
    assert all(torch.equal(uncounted.rates[k], result.rates[k]) for k in result.rates)


# ---------------------------------------------------------------- memory does not grow with T (5c)
def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("feedback", [False, True])
def test_memory_kept_for_backward_does_not_depend_on_T(feedback):
    net = StackedSpikingNetwork(32, 4, feedback=feedback)
    x = torch.randn(4, 8, 32)
    layer = EquilibriumLayer(EquilibriumConfig(forward="simulate"))
    ift = {T: saved_bytes(lambda: layer(net.rate_map(x), time_steps=T)) for T in (8, 128)}
    assert ift[8] > 0
    assert ift[8] == ift[128]
    # Backprop-through-time over the same simulation saves ~T times more: the counter can tell.
    bptt = {T: saved_bytes(lambda: simulate(net.rate_map(x), T, differentiable=True)) for T in (8, 128)}
    assert bptt[128] > 10 * bptt[8]
    assert bptt[8] > ift[8]


# ---------------------------------------------------------------- bad input names itself (5d)
def tiny_map(**kwargs):
    return RateMap([Population("a", (), lambda: torch.ones(2, 3))], **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(solver="newton"), r"solver='newton' is not valid; choose one of: 'anderson', 'broyden', 'fixed_point_iter'"),
        (
            dict(backward_solver="simple_fixed_point_iter"),
            r"backward_solver='simple_fixed_point_iter' is not valid; choose one of: 'anderson'",
        ),
        (dict(forward="bptt"), r"forward='bptt' is not valid; choose one of: 'solve', 'simulate'"),
        (dict(backward="exact"), r"backward='exact' is not valid; choose one of: 'ift', 'phantom'"),
        (dict(time_steps=0), r"time_steps=0 is not valid; it must be an integer >= 1"),
        (dict(time_steps=-4), r"time_steps=-4 is not valid"),
        (dict(tol=0.0), r"tol=0.0 is not valid; it must be a finite number > 0"),
        (dict(max_iter=2), r"max_iter=2 is too small for solver='anderson'"),
    ],
)
def test_bad_equilibrium_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EquilibriumConfig(**kwargs)


def test_bad_call_arguments_are_named():
    layer = EquilibriumLayer()
    with pytest.raises(ValueError, match=r"time_steps=0 is not valid"):
        layer(tiny_map(), mode="simulate", time_steps=0)
    with pytest.raises(ValueError, match=r"mode='spiking' is not valid; choose one of: 'solve', 'simulate'"):
        layer(tiny_map(), mode="spiking")


def test_rate_map_that_changes_the_shape_is_refused():
    x = torch.randn(2, 5)
    shrink = RateMap(
        [
            Population("a", ("b",), lambda b: x + b),
            Population("b", ("a",), lambda a: a[:, :4]),
        ],
        initial_state={"b": torch.zeros(2, 5)},
    )
    with pytest.raises(
        ValueError, match=r"changes the shape of population 'b': its state has shape \(2, 5\) but the sweep returned \(2, 4\)"
    ):
        EquilibriumLayer()(shrink)
    with pytest.raises(ValueError, match=r"changes the shape of population 'b'"):
        EquilibriumLayer()(shrink, mode="simulate", time_steps=3)


def test_bad_rate_map_structure_is_named():
    with pytest.raises(ValueError, match=r"'a' reads 'c', which is not a population; known populations: a, b"):
        RateMap([Population("a", ("c",), lambda c: c), Population("b", ("a",), lambda a: a)])
    with pytest.raises(ValueError, match=r"\['b'\] are read through feedback edges"):
        RateMap([Population("a", ("b",), lambda b: b), Population("b", ("a",), lambda a: a)])
    with pytest.raises(ValueError, match=r"'a' is used twice"):
        RateMap([Population("a", (), lambda: torch.ones(1)), Population("a", (), lambda: torch.ones(1))])
    with pytest.raises(ValueError, match=r"threshold=-1 is not valid"):
        from eqspike.core.neurons import NeuronConfig

        tiny_map(neuron=NeuronConfig(threshold=-1))


def test_bf16_autocast_runs_the_rate_map_low_and_the_solver_in_float32():
    """Under autocast the currents are bf16, but the rates, the equilibrium state and every solver
    call stay float32 (autocast is off inside the solver), and the implicit gradient still flows."""
    from eqspike.core.checks import StackedSpikingNetwork

    torch.manual_seed(0)
    net = StackedSpikingNetwork(32, 3, feedback=True, feedback_gain=0.3, seed=0)
    x = torch.randn(4, 8, 32)
    layer = EquilibriumLayer(EquilibriumConfig(tol=1e-3, max_iter=60))
    seen = []
    solver = layer.solve_deq.f_solver

    def recording_solver(func, x0, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), x0.dtype, func(x0).dtype))
        return solver(func, x0, *args, **kwargs)

    layer.solve_deq.f_solver = recording_solver
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rate_map = net.rate_map(x)
        assert any(
            p.current(*[rate_map.initial_state.get(n, torch.zeros(4, 8, 32)) for n in p.inputs]).dtype == torch.bfloat16
            for p in rate_map.populations
        )  # the currents really are bf16
        out = layer(rate_map)
    assert seen == [(False, torch.float32, torch.float32)]
    assert all(r.dtype == torch.float32 for r in out.rates.values())
    assert out.stats.solver_residual < 2e-2  # a fixed point of the bf16 map, to bf16's precision
    with torch.no_grad():
        exact = EquilibriumLayer(EquilibriumConfig(tol=1e-6, max_iter=100))(net.rate_map(x)).rates
    assert max((out.rates[k] - exact[k]).abs().max().item() for k in exact) < 0.05
    sum(r.sum() for r in out.rates.values()).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("time_steps", [2, 4, 8])
def test_simulation_implements_the_quantized_map_on_a_feed_forward_network(time_steps):
    """What T-aware training fits is what T steps of the spiking network compute.

    Per population: with x = F(simulated upstream rates at T) / V_th and the target count
    K = clamp(round(T x), lo T, T), the neuron ends with R(T) = K exactly when its count after T - 1
    steps is within one spike of K (its last step can reach it), and only then. Per network: the
    simulated rates equal the T-step quantized map's sweep where no neuron upstream lagged; where one
    did, its downstream sees a different input (how often, on real data, is what `diagnose` reports)."""
    from eqspike.core.checks import StackedSpikingNetwork
    from eqspike.core.neurons import time_step_rate

    T = time_steps
    network = StackedSpikingNetwork(64, depth=6, seed=3, dtype=torch.float64)
    x = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        rate_map = network.rate_map(x)
        before: dict[str, torch.Tensor] = {}
        observe = lambda t, rates, counts: before.update({k: v * t for k, v in rates.items()}) if t == T - 1 else None  # noqa: E731
        simulated = simulate(rate_map, T, observer=observe).rates
        quantized = network.rate_map(x, time_steps=T).sweep()
        reachable_fraction, network_match = [], []
        for population in rate_map.populations:
            current = population.current(*[simulated[name] for name in population.inputs])
            target = time_step_rate(current, rate_map.neuron, T) * T
            count = simulated[population.name] * T
            previous = before.get(population.name, torch.zeros_like(count))
            reachable = (target - previous).abs() <= 1 + 1e-9
            assert torch.allclose(count[reachable], target[reachable], atol=1e-9), population.name
            assert not torch.isclose(count[~reachable], target[~reachable], atol=1e-9).any(), population.name
            reachable_fraction.append(reachable.double().mean().item())
            network_match.append(
                torch.isclose(simulated[population.name], quantized[population.name], atol=1e-9).double().mean().item()
            )
    assert min(reachable_fraction) > 0.8, reachable_fraction
    # The constant-current population is the quantizer exactly; below it, a lag anywhere upstream changes
    # a downstream input, so agreement with the whole sweep decays with depth on this (strongly mixing) toy.
    assert network_match[0] == 1.0 and network_match[1] > 0.9, network_match
