"""The Gaussians' fused Adam optimizers stepped in one pass.

splatfacto has one Adam optimizer per Gaussian parameter (means, scales, quats, features_dc, features_rest,
opacities), and nerfstudio steps each through `Optimizer.step`: hooks, profiling, `_init_group`, grouping the
tensors by device, then torch's fused Adam kernel. That Python took 11 % of a training step in the stack samples
of a default bear edit on an H200 (benchmarks/RESULTS.md); the kernels take a few microseconds.

`step_fused_adams` steps every fused Adam whose parameters have gradients and Adam state in one pass: one
`_foreach_add_` for all step counts, then the fused kernel per parameter group with that group's own
hyper-parameters. That is the update `Adam(fused=True).step()` makes, bit for bit (tests/test_grouped_adam.py). It
declines, changing nothing, where it would differ: an optimizer that is not a fused `torch.optim.Adam`, amsgrad,
decoupled weight decay, a learning rate or betas given as tensors, a parameter with a gradient but no Adam state
yet (its first step), step hooks, tensors of more than one device or dtype. `GroupedOptimizers` is nerfstudio's
`Optimizers` using it when no grad scaler and no gradient clipping are in play (igs2gs trains without either), and
nerfstudio's own step otherwise.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from nerfstudio.engine.optimizers import Optimizers
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

_Call = Tuple[
    Dict[str, Any], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]
]
"""One fused kernel call: the group, its params, grads, exp_avgs, exp_avg_sqs and step counts."""


def _group_steps_alike(group: Dict[str, Any]) -> bool:
    """Whether torch's fused Adam would step this group as `step_fused_adams` does."""
    scalars = (group["lr"], *group["betas"])
    return (
        bool(group.get("fused"))
        and not group.get("amsgrad", False)
        and not group.get("differentiable", False)
        and not group.get("decoupled_weight_decay", False)
        and not any(isinstance(value, torch.Tensor) for value in scalars)
    )


def _calls(optimizers: Sequence[torch.optim.Optimizer]) -> Optional[List[_Call]]:
    """The fused kernel calls of one step of `optimizers`; None where torch's step would do something else."""
    if _global_optimizer_pre_hooks or _global_optimizer_post_hooks:
        return None
    calls, kinds = [], set()
    for optimizer in optimizers:
        if type(optimizer) is not torch.optim.Adam:
            return None
        if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
            return None
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if not _group_steps_alike(group):
                return None
            states = [optimizer.state.get(p) for p in params]
            if any(not state or "exp_avg" not in state for state in states):
                return None  # the first step makes the state: torch's own step does that
            if any(p.grad.is_sparse or state["step"].device != p.device for p, state in zip(params, states)):
                return None
            kinds.update((p.device, p.dtype) for p in params)
            calls.append(
                (
                    group,
                    params,
                    [p.grad for p in params],
                    [state["exp_avg"] for state in states],
                    [state["exp_avg_sq"] for state in states],
                    [state["step"] for state in states],
                )
            )
    return calls if len(kinds) <= 1 else None


def step_fused_adams(optimizers: Sequence[torch.optim.Optimizer]) -> bool:
    """One `Adam(fused=True).step()` of each of `optimizers`, in one pass; False (nothing done) where it declines
    (see the module docstring)."""
    calls = _calls(optimizers)
    if calls is None:
        return False
    steps = [step for *_, group_steps in calls for step in group_steps]
    if steps:
        torch._foreach_add_(steps, 1)
    for group, params, grads, exp_avgs, exp_avg_sqs, group_steps in calls:
        beta1, beta2 = group["betas"]
        torch._fused_adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            group_steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            amsgrad=False,
            maximize=group["maximize"],
        )
    for optimizer in optimizers:
        optimizer._opt_called = True  # what torch's step records for its learning-rate schedulers
    return True


class GroupedOptimizers(Optimizers):
    """nerfstudio's `Optimizers`, stepping the fused Adams in one pass when no grad scaler and no gradient
    clipping are in play (see the module docstring)."""

    def optimizer_scaler_step_all(self, grad_scaler: Any) -> None:
        if not self._step_grouped(grad_scaler, list(self.optimizers)):
            super().optimizer_scaler_step_all(grad_scaler)

    def optimizer_scaler_step_some(self, grad_scaler: Any, param_groups: List[str]) -> None:
        if not self._step_grouped(grad_scaler, param_groups):
            super().optimizer_scaler_step_some(grad_scaler, param_groups)

    def _step_grouped(self, grad_scaler: Any, names: List[str]) -> bool:
        if grad_scaler.is_enabled() or any(self.config[name]["optimizer"].max_norm is not None for name in names):
            return False
        return step_fused_adams([self.optimizers[name] for name in names])
