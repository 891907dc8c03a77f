"""The spiking equilibrium core: IF neurons, the rate map and its implicit layer, quantized weights,
and the numerical checks of the implicit gradient.
"""
