"""`StepLoss`: token-weighted step loss, and steps skipped (not taken) for non-finite losses or gradients."""

import pytest
import torch

from dentvlm.model.step_loss import StepLoss


def params_with_grads(*grads):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for param, grad in zip(params, grads):
        param.grad = grad.clone()
    return params


def test_gradients_are_scaled_by_the_steps_tokens():
    step = StepLoss()
    step.start(torch.device("cpu"))
    step.add(torch.tensor(6.0), torch.tensor(2))
    step.add(torch.tensor(4.0), torch.tensor(3))
    [param] = params_with_grads(torch.tensor([10.0, 20.0]))
    loss = step.scale_gradients([param], accumulate=2, ranks=1)
    assert loss == pytest.approx(2.0)  # (6 + 4) / 5 tokens
    torch.testing.assert_close(param.grad, torch.tensor([4.0, 8.0]))  # x 2 / 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_finite_loss_with_non_finite_gradients_skips_the_step(bad):
    step = StepLoss()
    step.start(torch.device("cpu"))
    step.add(torch.tensor(3.0), torch.tensor(4))
    params = params_with_grads(torch.tensor([1.0, bad]), torch.tensor([2.0]))
    assert step.scale_gradients(params, accumulate=1, ranks=1) is None
    assert all(p.grad is None for p in params)  # AdamW leaves a parameter without a gradient untouched
    assert step.reason() == "non-finite gradients with a finite loss"


def test_non_finite_gradients_are_left_to_a_gradient_scaler():
    step = StepLoss()
    step.start(torch.device("cpu"))
    step.add(torch.tensor(3.0), torch.tensor(4))
    [param] = params_with_grads(torch.tensor([float("inf")]))
    assert step.scale_gradients([param], accumulate=1, ranks=1, check_gradients=False) == pytest.approx(0.75)


def test_non_finite_loss_skips_the_step():
    step = StepLoss()
    step.start(torch.device("cpu"))
    step.add(torch.tensor(float("nan")), torch.tensor(4))
    [param] = params_with_grads(torch.tensor([1.0]))
    assert step.scale_gradients([param], accumulate=1, ranks=1) is None and param.grad is None
    assert step.reason() == "a non-finite loss"


def test_the_next_step_starts_clean():
    step = StepLoss()
    step.start(torch.device("cpu"))
    step.add(torch.tensor(float("nan")), torch.tensor(4))
    assert step.scale_gradients(params_with_grads(torch.tensor([1.0])), 1, 1) is None
    step.start(torch.device("cpu"))
    step.add(torch.tensor(2.0), torch.tensor(4))
    assert step.scale_gradients(params_with_grads(torch.tensor([1.0])), 1, 1) == pytest.approx(0.5)


def test_totals_follow_the_losses_device():
    """Resuming inside an accumulation window: `start` has not run for this step, so the totals are
    still the CPU ones made at construction while the losses live on the accelerator. A `meta` tensor
    stands in for a CUDA one (CI has no GPU): adding it to CPU totals raises without the move."""
    step = StepLoss()
    step.add(torch.tensor(1.0, device="meta"), torch.tensor(3, device="meta"))
    assert step.totals.device.type == "meta"
    step.add(torch.tensor(2.0, device="meta"), torch.tensor(1, device="meta"))
    assert step.totals.device.type == "meta"
