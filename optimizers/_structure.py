"""How a parameter tensor of any shape is preconditioned by the Kronecker-factored methods.

The rule (shared by RFShampoo and IFShampoo, documented in their docstrings):

* Dimensions of size 1 are dropped first (a ``(1, 1, 192)`` class token is a vector).
* A tensor with two or more remaining dimensions is viewed as a matrix ``(p, d)`` with
  ``p = shape[0]`` (output channels / rows) and ``d = prod(shape[1:])``: a linear weight is itself,
  a conv kernel ``(out, in, kh, kw)`` becomes ``(out, in*kh*kw)`` (as KFAC and the authors' code do),
  and an embedding table ``(vocab, dim)`` is a matrix like any other.
* It gets a Kronecker pair (p x p, d x d) when both sides are at most ``max_factor_dim``.
* Otherwise - vectors (biases, norm scales), scalars and matrices with a side above the cap
  (a large vocabulary) - it gets the RF-RMSProp diagonal preconditioner: elementwise
  ``s <- (1 - beta2*gamma) s + beta2 B g^2``, step ``g / (s + damping)``. This costs O(n) memory
  where a dense factor would cost O(n^2). (sirfshampoo instead gives a vector one dense n x n
  factor; this is the one place where the two differ by design.)
"""

from __future__ import annotations

import math

import torch


def matrix_shape(param: torch.Tensor, max_factor_dim: int) -> tuple[int, int] | None:
    """The (p, d) matrix view that gets Kronecker factors, or None for the diagonal rule."""
    dims = [s for s in param.shape if s != 1]
    if len(dims) < 2:
        return None
    p, d = dims[0], math.prod(dims[1:])
    if p > max_factor_dim or d > max_factor_dim:
        return None
    return p, d
