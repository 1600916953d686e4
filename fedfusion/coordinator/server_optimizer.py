"""The coordinator's server optimizer: how the sites' patient-weighted mean update moves the global model.

The rules are those of Flower 1.41's Message-API strategies (``flwr/serverapp/strategy/``), written for a mean
update ``delta`` (the patient-weighted average of trained minus global weights) instead of an aggregated model:

- ``fedavg``: ``x + eta * delta`` (eta = 1: plain FedAvg; ``FedAvg``, or ``FedAvgM`` without momentum);
- ``fedavgm``: pseudo-gradient ``g = -delta``, momentum ``m = g`` at the first step, then ``beta_1 * m + g``;
  ``x - eta * m`` (``fedavgm.py``: SGD momentum as in ``torch.optim.SGD``, no dampening);
- ``fedadam``: ``m = beta_1 m + (1 - beta_1) delta``, ``v = beta_2 v + (1 - beta_2) delta**2`` (both from 0),
  ``x + eta_t * m / (sqrt(v) + tau)`` with ``eta_t = eta sqrt(1 - beta_2**(t+1)) / (1 - beta_1**(t+1))``
  (``fedadam.py`` uses ``server_round + 1`` there; t is this optimizer's step, which equals Flower's round when
  every round aggregates);
- ``fedyogi``: ``m`` as Adam, ``v = v - (1 - beta_2) delta**2 sign(v - delta**2)``, ``x + eta m / (sqrt(v) + tau)``;
- ``fedadagrad``: ``m = delta``, ``v = v + delta**2``, ``x + eta m / (sqrt(v) + tau)``.

The step counter is the optimizer's own (steps actually taken), not the server round, which a resumed study
shifts and a round that was not aggregated skips. Only floating-point arrays are optimized; any other array takes
the aggregate as is (global + mean update, in the global array's dtype). Moments are kept in each array's own dtype,
as Flower does, and ``state_dict``/``load_state_dict`` carry them across a coordinator restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedfusion.errors import ConfigError
from fedfusion.study.config import SERVER_OPTIMIZERS, StudyConfig

NDArray = npt.NDArray[Any]
"""A numpy array of any dtype (the global model's arrays)."""
FIRST_MOMENT = "m"
SECOND_MOMENT = "v"


@dataclass(frozen=True)
class ServerOptimizerState:
    """What a server optimizer remembers: its rule, the steps taken and its moments (``"m/<name>"``, ``"v/<name>"``)."""

    rule: str
    step: int
    moments: dict[str, NDArray] = field(default_factory=dict)


class ServerOptimizer:
    """One of ``SERVER_OPTIMIZERS`` applied to (global arrays, mean update) once per aggregated round."""

    def __init__(self, rule: str = "fedavg", *, learning_rate: float = 1.0, momentum: float = 0.9,
                 beta2: float = 0.99, tau: float = 1e-3) -> None:
        if rule not in SERVER_OPTIMIZERS:
            raise ConfigError(f"server optimizer must be one of {SERVER_OPTIMIZERS}, got '{rule}'")
        self.rule = rule
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.beta2 = beta2
        self.tau = tau
        self.step_count = 0
        self._moments: dict[str, NDArray] = {}

    @classmethod
    def of(cls, study: StudyConfig) -> ServerOptimizer:
        """The study's server optimizer (``server-optimizer`` and its ``server-*`` keys), fresh."""
        return cls(study.server_optimizer, learning_rate=study.server_learning_rate,
                   momentum=study.server_momentum, beta2=study.server_beta2, tau=study.server_tau)

    def step(self, global_arrays: Mapping[str, NDArray], mean_update: Mapping[str, NDArray]) -> dict[str, NDArray]:
        """The next global arrays; counts one step. ``mean_update`` must name exactly the global arrays."""
        if set(global_arrays) != set(mean_update):
            raise ValueError(f"the mean update names {sorted(mean_update)}, the global model {sorted(global_arrays)}")
        self.step_count += 1
        updated: dict[str, NDArray] = {}
        for name, current in global_arrays.items():
            delta = np.asarray(mean_update[name])
            if delta.shape != current.shape:
                raise ValueError(f"mean update of '{name}' has shape {delta.shape}, the global array {current.shape}")
            if np.issubdtype(current.dtype, np.floating):
                new = current + self._move(name, delta.astype(current.dtype, copy=False))
            else:
                new = current + delta
            updated[name] = np.asarray(new, dtype=current.dtype)
        return updated

    def state_dict(self) -> ServerOptimizerState:
        """The rule, step count and moments (copies)."""
        return ServerOptimizerState(self.rule, self.step_count, {k: v.copy() for k, v in self._moments.items()})

    def load_state_dict(self, state: ServerOptimizerState) -> None:
        """Continue from ``state`` (``ConfigError`` if it is another rule's)."""
        if state.rule != self.rule:
            raise ConfigError(f"server optimizer state is of '{state.rule}', the study uses '{self.rule}'")
        self.step_count = state.step
        self._moments = {k: np.array(v) for k, v in state.moments.items()}

    def _move(self, name: str, delta: NDArray) -> NDArray:
        """This step's change of one floating-point array, updating its moments."""
        eta = self.learning_rate
        if self.rule == "fedavg":
            return eta * delta
        if self.rule == "fedavgm":
            previous = self._moments.get(f"{FIRST_MOMENT}/{name}")
            momentum = -delta if previous is None else self.momentum * previous - delta
            self._moments[f"{FIRST_MOMENT}/{name}"] = momentum
            return -eta * momentum
        beta1 = 0.0 if self.rule == "fedadagrad" else self.momentum
        m = beta1 * self._moment(FIRST_MOMENT, name, delta) + (1 - beta1) * delta
        v = self._moment(SECOND_MOMENT, name, delta)
        squared = delta**2
        if self.rule == "fedadam":
            v = self.beta2 * v + (1 - self.beta2) * squared
            t = self.step_count + 1.0  # fedadam.py: server_round + 1.0
            eta = eta * float(np.sqrt(1 - self.beta2**t) / (1 - self.momentum**t))
        elif self.rule == "fedyogi":
            v = v - (1 - self.beta2) * squared * np.sign(v - squared)
        else:
            v = v + squared
        self._moments[f"{FIRST_MOMENT}/{name}"] = m
        self._moments[f"{SECOND_MOMENT}/{name}"] = v
        change: NDArray = eta * m / (np.sqrt(v) + self.tau)
        return change

    def _moment(self, kind: str, name: str, like: NDArray) -> NDArray:
        """The stored moment, zeros at the first step (Flower starts both moments at zero)."""
        return self._moments.get(f"{kind}/{name}", np.zeros_like(like))
