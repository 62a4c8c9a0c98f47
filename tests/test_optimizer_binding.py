"""Re-binding optimizers to tensors that replaced their parameters (NOTES.md item 5)."""

import torch
from torch.nn import Parameter

from igs2gs.optimizer_binding import optimizers_hold, rebind_optimizers


def _adam_after_one_step(param: Parameter) -> torch.optim.Adam:
    optimizer = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.ones_like(param)
    optimizer.step()
    return optimizer


def test_rebound_optimizer_updates_the_live_tensor_and_keeps_fitting_state():
    stale = Parameter(torch.zeros(4, 3))
    optimizer = _adam_after_one_step(stale)
    live = Parameter(torch.ones(4, 3))
    assert not optimizers_hold({"means": optimizer}, {"means": live})

    assert rebind_optimizers({"means": optimizer}, {"means": live}) == ["means"]
    assert optimizers_hold({"means": optimizer}, {"means": live})
    assert optimizer.param_groups[0]["params"][0] is live
    assert optimizer.state[live]["exp_avg"].shape == live.shape and optimizer.state[live]["exp_avg"].abs().sum() > 0
    assert stale not in optimizer.state

    before = live.detach().clone()
    live.grad = torch.ones_like(live)
    optimizer.step()
    assert not torch.equal(live.detach(), before)


def test_state_of_another_size_is_reset():
    optimizer = _adam_after_one_step(Parameter(torch.zeros(4, 3)))
    live = Parameter(torch.ones(9, 3))
    rebind_optimizers({"means": optimizer}, {"means": live})
    assert optimizer.state[live]["exp_avg"].shape == (9, 3)
    assert optimizer.state[live]["exp_avg"].abs().sum() == 0
    live.grad = torch.ones_like(live)
    optimizer.step()  # no size mismatch


def test_bound_optimizers_are_left_alone():
    param = Parameter(torch.zeros(2, 3))
    optimizer = _adam_after_one_step(param)
    state = optimizer.state[param]
    assert rebind_optimizers({"means": optimizer}, {"means": param}) == []
    assert optimizer.state[param] is state
