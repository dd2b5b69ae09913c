"""The fused scaled-cosine layer shared by all margin heads: gradcheck and plain-autograd agreement."""

import torch
import torch.nn.functional as F

from facerec.heads.cosine_linear import scaled_cosine_linear


def test_gradcheck() -> None:
    torch.manual_seed(0)
    x = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1).requires_grad_()
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: scaled_cosine_linear(a, b, 7.0), (x, w))


def test_matches_normalize() -> None:
    torch.manual_seed(0)
    x = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    w = torch.randn(3, 4, dtype=torch.float64)
    w[1] = 0.0
    torch.testing.assert_close(scaled_cosine_linear(x, w, 2.0), 2.0 * x @ F.normalize(w, dim=1).T)
    w.requires_grad_()
    scaled_cosine_linear(x, w, 2.0).sum().backward()
    assert torch.isfinite(w.grad).all()
