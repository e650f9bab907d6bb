"""Flower's server strategies by name (`federated.strategy`), and their state.

Each entry builds one of Flower's message-based strategies (flwr.serverapp.strategy) from
the `[federated]` config; hone adds nothing to how they sample clients or aggregate. What a
strategy learns across rounds (FedAvgM's server momentum, the first and second moments of
FedAdam, FedYogi and FedAdagrad) is checkpointed with the global weights, so a resumed run
aggregates exactly as one never stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hone.federate.settings import FederatedConfig
from hone.registry import Registry

StrategyBuilder = Callable[[FederatedConfig], Any]
STRATEGIES: Registry[StrategyBuilder] = Registry("strategy", "federated.strategy")

# Attributes of Flower's strategies that carry state from round to round.
_STATE_ATTRIBUTES = ("momentum_vector", "m_t", "v_t")


def _sampling(fed: FederatedConfig) -> dict[str, Any]:
    """How every strategy samples: `fraction` of the clients, at least one, once all
    `clients` are connected (a deployment waits for its SuperNodes)."""
    return {
        "fraction_train": fed.fraction,
        "min_train_nodes": 1,
        "min_available_nodes": fed.clients,
    }


def _server_lr(fed: FederatedConfig) -> dict[str, Any]:
    """eta, when set; else each strategy keeps Flower's own default."""
    return {"eta": fed.server_lr} if fed.server_lr else {}


@STRATEGIES.register("fedavg")
def _fedavg(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedAvg

    return FedAvg(**_sampling(fed))


@STRATEGIES.register("fedprox")
def _fedprox(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedProx

    # FedProx's server is FedAvg that tells clients mu; the term itself is the client's
    # (hone.federate.proximal).
    return FedProx(**_sampling(fed), proximal_mu=fed.proximal_mu)


@STRATEGIES.register("fedavgm")
def _fedavgm(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedAvgM

    return FedAvgM(
        **_sampling(fed),
        server_learning_rate=fed.server_lr or 1.0,
        server_momentum=fed.server_momentum,
    )


@STRATEGIES.register("fedadam")
def _fedadam(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedAdam

    return FedAdam(**_sampling(fed), **_server_lr(fed), beta_1=fed.server_momentum)


@STRATEGIES.register("fedyogi")
def _fedyogi(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedYogi

    return FedYogi(**_sampling(fed), **_server_lr(fed), beta_1=fed.server_momentum)


@STRATEGIES.register("fedadagrad")
def _fedadagrad(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedAdagrad

    return FedAdagrad(**_sampling(fed), **_server_lr(fed))


@STRATEGIES.register("fedmedian")
def _fedmedian(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedMedian

    return FedMedian(**_sampling(fed))


@STRATEGIES.register("fedtrimmedavg")
def _fedtrimmedavg(fed: FederatedConfig) -> Any:
    from flwr.serverapp.strategy import FedTrimmedAvg

    return FedTrimmedAvg(**_sampling(fed), beta=fed.trim_fraction)


def build_strategy(fed: FederatedConfig) -> Any:
    """The Flower strategy `federated.strategy` names (the error lists the known ones)."""
    return STRATEGIES.get(fed.strategy)(fed)


def strategy_state(strategy: Any) -> dict[str, Any]:
    """What the strategy carries between rounds (numpy arrays; empty for FedAvg)."""
    return {
        name: getattr(strategy, name)
        for name in _STATE_ATTRIBUTES
        if getattr(strategy, name, None) is not None
    }


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    for name, value in state.items():
        assert name in _STATE_ATTRIBUTES and hasattr(strategy, name), name
        setattr(strategy, name, value)
