import pytest
import torch

from eqspike.core.quantization import (
    QuantLinear,
    parse_weight_bits,
    quantize_weight,
    straight_through_weight,
)


def test_ternary_weights_take_three_values_per_tensor():
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    q = quantize_weight(weight, 1.58)
    gamma = weight.abs().mean()
    values = set(torch.unique(q).tolist())
    assert values == {-gamma.item(), 0.0, gamma.item()}
    # round(W / gamma) clipped to [-1, 1]: zero exactly where |W| < gamma / 2
    assert torch.equal(q == 0, (weight / gamma).round() == 0)


def test_binary_weights_take_two_values_centred_on_the_mean():
    torch.manual_seed(1)
    weight = torch.randn(32, 32) + 0.3
    q = quantize_weight(weight, 1)
    alpha = (weight - weight.mean()).abs().mean()
    assert set(torch.unique(q).tolist()) == {-alpha.item(), alpha.item()}
    assert torch.equal(q > 0, weight >= weight.mean())


def test_straight_through_gradient_is_identity():
    weight = torch.randn(5, 4, requires_grad=True)
    upstream = torch.randn(5, 4)
    (straight_through_weight(weight, 1.58) * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)


def test_quant_linear_uses_quantized_weights_in_forward():
    torch.manual_seed(2)
    layer = QuantLinear(8, 3, weight_bits=1.58)
    x = torch.randn(4, 8)
    expected = x @ quantize_weight(layer.weight, 1.58).T + layer.bias
    assert torch.allclose(layer(x), expected)
    assert len(torch.unique(layer.effective_weight().detach())) <= 3


@pytest.mark.parametrize("text, value", [("32", 32), ("1", 1), ("1.58", 1.58), (1.58, 1.58), (32.0, 32)])
def test_parse_weight_bits(text, value):
    assert parse_weight_bits(text) == value


def test_bad_weight_bits_lists_the_choices():
    with pytest.raises(ValueError, match=r"weight_bits='2' is not valid; choose one of: 32, 1, 1.58"):
        parse_weight_bits("2")
