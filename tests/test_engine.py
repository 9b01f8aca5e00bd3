"""cpsc_lite.engine: the one optimiser update, the scheduler step, compile wrapping, seeding."""

import random
import warnings

import numpy as np
import torch
from torch import nn

from cpsc_lite import engine


def _problem():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return net, x, y


def test_update_equals_the_hand_written_step():
    net, x, y = _problem()
    twin = nn.Linear(3, 1)
    twin.load_state_dict(net.state_dict())
    opt, opt_twin = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    engine.update((opt,), ((net(x) - y) ** 2).mean())
    opt_twin.zero_grad()
    ((twin(x) - y) ** 2).mean().backward()
    opt_twin.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_update_clears_old_gradients_and_steps_every_optimizer():
    net, x, y = _problem()
    head = nn.Linear(1, 1)
    opts = (torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(head.parameters(), lr=0.1))
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e6)  # stale: must not leak into the step
    before = [p.detach().clone() for p in (*net.parameters(), *head.parameters())]
    engine.update(opts, head(net(x)).pow(2).mean())
    after = list((*net.parameters(), *head.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.abs().max() < 1e3 for p in after)


def test_before_step_runs_between_backward_and_step():
    net, x, y = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    seen = {}

    def halve():  # e.g. averaging gradients over two processes
        seen["grad"] = net.weight.grad.clone()
        for p in net.parameters():
            p.grad /= 2
    w0 = net.weight.detach().clone()
    engine.update((opt,), ((net(x) - y) ** 2).mean(), before_step=halve)
    torch.testing.assert_close(net.weight.detach(), w0 - seen["grad"] / 2)


def test_fp16_scaler_path_and_scheduler_step_without_warnings():
    net, x, y = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 ** it)
    scaler = torch.amp.GradScaler("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.update((opt,), ((net(x) - y) ** 2).mean(), scaler)
        engine.step_scheduler(sched, scaler)
    assert opt.param_groups[0]["lr"] == 0.05


def test_compiler_is_the_identity_when_off():
    net = nn.Linear(2, 2)
    assert engine.compiler(engine.Acceleration())(net) is net
    assert engine.compiler(engine.Acceleration(compile="off"))(net) is net


def test_seed_everything_and_rng_state_round_trip():
    engine.seed_everything(7)
    state = engine.rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    engine.set_rng_state(state)
    b = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert a == b
    engine.seed_everything(7)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a
