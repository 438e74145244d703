"""The closed-form solve shared by UCE and TIME (Gandikota et al. 2024; Orgad et al. 2023).

For a linear layer W0 the edited weight minimises

    s_e * sum_e |W c_e - v_e|^2 + s_p * sum_p |W c_p - W0 c_p|^2 + lam * |W - W0|_F^2,

whose normal equations give

    W (lam I + s_e C_e C_e^T + s_p C_p C_p^T) = lam W0 + s_e V_e C_e^T + s_p W0 C_p C_p^T.

Every target of UCE and TIME has the form v_e = W0 d_e (a destination, guide or
debiased text vector pushed through the *original* layer), so the right side is
W0 (lam I + s_e D_e C_e^T + s_p C_p C_p^T) and the solution is W = W0 T with one
in x in matrix T shared by all layers that read the same text. That turns "solve
every layer" into one small solve plus one matmul per layer.
"""

from __future__ import annotations

import torch

from .base import working_dtype


def solve_general(W0: torch.Tensor, C_e: torch.Tensor, V_e: torch.Tensor, C_p: torch.Tensor,
                  lam: float, s_e: float, s_p: float) -> torch.Tensor:
    """Reference solve for arbitrary targets. W0 (out, in); C_e (n, in); V_e (n, out); C_p (m, in)."""
    W0, C_e, V_e, C_p = (t.double() for t in (W0, C_e, V_e, C_p))
    d = W0.shape[1]
    M = lam * torch.eye(d, dtype=W0.dtype) + s_e * C_e.T @ C_e + s_p * C_p.T @ C_p
    R = lam * W0 + s_e * V_e.T @ C_e + s_p * (W0 @ C_p.T) @ C_p
    return torch.linalg.solve(M, R.T).T  # M is symmetric: W M = R  <=>  M W^T = R^T


def shared_transform(C_e: torch.Tensor, D_e: torch.Tensor, C_p: torch.Tensor,
                     lam: float, s_e: float, s_p: float) -> torch.Tensor:
    """T with W = W0 T for targets v_e = W0 d_e. C_e, D_e (n, in); C_p (m, in). Solved in
    float32 (float64 for float64 inputs)."""
    dtype = working_dtype(C_e, D_e, C_p)
    C_e, D_e, C_p = (t.to(dtype) for t in (C_e, D_e, C_p))
    d = C_e.shape[1]
    eye = torch.eye(d, dtype=dtype)
    M = lam * eye + s_e * C_e.T @ C_e + s_p * C_p.T @ C_p
    A = lam * eye + s_e * D_e.T @ C_e + s_p * C_p.T @ C_p
    return torch.linalg.solve(M, A.T).T  # T M = A


def apply_transform(weights: dict[str, torch.Tensor], T: torch.Tensor) -> dict[str, torch.Tensor]:
    """W0 T for every layer of a group; layers of equal shape go through one batched matmul."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for key, w in weights.items():
        by_shape.setdefault(tuple(w.shape), []).append(key)
    out = {}
    for keys in by_shape.values():
        stacked = torch.stack([weights[k].to(working_dtype(weights[k], T)) for k in keys])
        solved = torch.matmul(stacked, T.to(stacked.dtype))
        out.update({k: solved[i].to(weights[k].dtype) for i, k in enumerate(keys)})
    return out
