"""Federated runs in one process: one client is `hone train`, the same seed gives the same
weights bit for bit, a resumed run continues exactly, FedProx pulls clients toward the
global weights, and the run directory is any hone run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hone.config import load_config
from hone.engine import LoadedRun, Trainer
from hone.engine.inference import evaluate_run
from hone.federate import federate
from hone.federate.client import train_round
from hone.federate.proximal import ProximalLoss
from hone.federate.server import FederatedRun
from hone.track.run import read_metrics
from tests.federate.conftest import QUIET, TINY


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_client_one_round_of_fedavg_is_hone_train(tmp_path: Path) -> None:
    """K local steps of one client holding all the data are K steps of `hone train`: same
    initial weights, batches, dropout, lr schedule (25 steps: warmup, an epoch boundary)."""
    steps = 25
    common = [*TINY, "train.max_epochs=0", f"train.max_steps={steps}"]
    Trainer(
        config=load_config("mlp-digits", [*common, "log.stats_every=0"]), run_dir=tmp_path / "train"
    ).fit()
    federated = [
        "federated.clients=1",
        "federated.rounds=1",
        f"federated.local_steps={steps}",
        "federated.strategy=fedavg",
    ]
    federate(load_config("mlp-digits", [*common, *federated]), tmp_path / "federated")
    trained, averaged = weights(tmp_path / "train"), weights(tmp_path / "federated")
    assert same(trained, averaged)
    # and the test can fail: one step fewer is not the same model
    federated[2] = f"federated.local_steps={steps - 1}"
    federate(load_config("mlp-digits", [*common, *federated]), tmp_path / "fewer")
    assert not same(trained, weights(tmp_path / "fewer"))


RUN = [
    *TINY,
    "federated.clients=3",
    "federated.rounds=3",
    "federated.fraction=0.67",  # two of three clients each round: sampling is seeded too
    "federated.local_steps=3",
    "federated.partition=dirichlet",
    "federated.alpha=0.5",
    "federated.strategy=fedavgm",  # server momentum: state the checkpoints must carry
    "federated.server_lr=0.5",
]


def test_same_seed_same_weights_and_resume_continues_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config("mlp-digits", RUN)
    first = federate(cfg, tmp_path / "a")
    federate(cfg, tmp_path / "b")
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert first["rounds"] == 3 and first["strategy"] == "fedavgm"

    # A run that dies in round 3 resumes from round 2's checkpoint and ends where "a" ended.
    train_round_of = FederatedRun.train_round

    def dies_in_round_3(self: FederatedRun, grid: object, server_round: int) -> None:
        if server_round == 3:
            raise KeyboardInterrupt
        train_round_of(self, grid, server_round)  # type: ignore[arg-type]

    monkeypatch.setattr(FederatedRun, "train_round", dies_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        federate(cfg, tmp_path / "c")
    assert not (tmp_path / "c/model.safetensors").exists()
    monkeypatch.setattr(FederatedRun, "train_round", train_round_of)
    with pytest.raises(Exception, match="already holds checkpoints"):
        federate(cfg, tmp_path / "c")
    federate(cfg, tmp_path / "c", resume=True)
    assert same(weights(tmp_path / "a"), weights(tmp_path / "c"))
    rounds = [e["round"] for e in read_metrics(tmp_path / "c") if e["split"] == "val"]
    assert rounds == [1, 2, 3]  # the metrics of round 3 once, from the resumed run


def test_the_run_directory_is_a_hone_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [*RUN, "log.tensorboard=true", "federated.strategy=fedavg"]
    summary = federate(load_config("mlp-digits", overrides), run)
    for name in ("config.toml", "metrics.jsonl", "data.json", "summary.json", "partitions.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step-0000003"
    events = read_metrics(run)
    train = [e for e in events if e["split"] == "train"]
    assert [e["round"] for e in train] == [1, 2, 3]
    assert all(e["clients"] == 2 and len(e["client_losses"]) == 2 for e in train)
    assert [e["split"] for e in events].count("val") == 3
    partitions = json.loads((run / "partitions.json").read_text())
    assert partitions["partition"] == "dirichlet" and partitions["alpha"] == 0.5
    for client in partitions["clients"]:
        assert sum(client["label_counts"]) == client["num_samples"] > 0
    # eval, predict (and so serve) load it as any run
    loaded = LoadedRun.load(run, "cpu")
    assert evaluate_run(run, "test", "cpu")["accuracy"] == pytest.approx(summary["test_accuracy"])
    raw = torch.rand(3, 64) * 16
    assert len(loaded.predict(raw)["predictions"]) == 3


def test_fedprox_keeps_a_client_near_the_global_weights() -> None:
    cfg = load_config(
        "mlp-digits",
        [*TINY, "federated.clients=2", "federated.rounds=1", "federated.local_steps=20"],
    )
    global_state = _initial(cfg)

    def drift(mu: float) -> float:
        state = train_round(cfg, 1, 2, 1, global_state, proximal_mu=mu).state
        return sum(float((state[k] - global_state[k]).pow(2).sum()) for k in state)

    assert drift(1.0) < 0.5 * drift(0.0)


def _initial(cfg: object) -> dict[str, torch.Tensor]:
    from hone.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, ModelSpec("classification", (1, 8, 8), 10))  # type: ignore[attr-defined]
    return model.state_dict()


def test_the_proximal_term_adds_mu_times_the_distance_to_the_gradient() -> None:
    model = torch.nn.Linear(3, 2)
    base = torch.nn.functional.mse_loss
    loss = ProximalLoss(base, mu=0.5)
    loss.anchor(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    loss(model(x), y).backward()
    with_term = model.weight.grad.clone()  # type: ignore[union-attr]
    model.zero_grad()
    base(model(x), y).backward()
    assert torch.allclose(with_term, model.weight.grad + 0.5 * 1.0)  # type: ignore[operator]


def test_a_language_model_trains_on_contiguous_text_and_samples(tmp_path: Path) -> None:
    from tests.conftest import TINY_GPT_RUN

    overrides = [
        *TINY_GPT_RUN,
        *QUIET,
        "federated.clients=2",
        "federated.rounds=2",
        "federated.local_steps=2",
    ]
    summary = federate(load_config("gpt-shakespeare-char", overrides), tmp_path / "gpt")
    assert summary["partition"] == "shards" and summary["metric"] == "perplexity"
    partitions = json.loads((tmp_path / "gpt/partitions.json").read_text())
    assert all(c["num_tokens"] > 0 and c["label_counts"] == [] for c in partitions["clients"])
    text = LoadedRun.load(tmp_path / "gpt", "cpu").sample("ROMEO:", 20, seed=0)
    assert isinstance(text, str) and len(text) > 0
