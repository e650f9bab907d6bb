"""csv, npz and custom (user factory) data sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hone.config import Config
from hone.data.custom import custom
from hone.data.split import inverse
from hone.data.tabular import csv_data, npz_data
from hone.errors import ConfigError


def config(name: str, **data) -> Config:
    cfg = Config()
    cfg.data.name = name
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def write_csv(path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def test_csv_classification_by_default(tmp_path):
    rows = [f"{i},{i * 0.5},{[3, 7, 9][i % 3]}" for i in range(30)]
    path = write_csv(tmp_path / "t.csv", "a, b ,label", rows)
    data = csv_data(config("csv", path=path, normalize="none", val_fraction=0.2, test_fraction=0.1))
    assert (
        data.task == "classification" and data.num_outputs == 3 and data.class_labels == [3, 7, 9]
    )
    assert data.feature_names == ["a", "b"] and data.input_shape == (2,)
    assert (len(data.train[0]), len(data.val[0]), len(data.test[0])) == (21, 6, 3)
    x, y = data.train
    assert torch.equal(y, (x[:, 0] % 3).long())  # each label stays with its row
    assert torch.equal(x[:, 1], x[:, 0] * 0.5)


def test_csv_target_column_and_regression(tmp_path):
    rows = [f"{i * 0.1},{i},{i % 2}" for i in range(40)]
    path = write_csv(tmp_path / "t.csv", "y,a,b", rows)
    data = csv_data(config("csv", path=path, target_column="y"))
    assert (
        data.task == "regression"
        and data.train[1].shape == (28, 1)
        and data.feature_names == ["a", "b"]
    )
    raw = inverse(data.preprocessor, data.train[0])
    assert torch.allclose(data.train[1][:, 0], raw[:, 0] * 0.1, atol=1e-4)
    binary = csv_data(config("csv", path=path, task="binary"))  # target: the last column, b
    assert (
        binary.task == "binary"
        and binary.num_outputs == 1
        and binary.train[1].dtype == torch.float32
    )
    assert set(binary.train[1].tolist()) == {0.0, 1.0}


def test_csv_text_labels(tmp_path):
    rows = [f"{i},{'yes' if i % 2 else 'no'}" for i in range(20)]
    data = csv_data(config("csv", path=write_csv(tmp_path / "t.csv", "a,answer", rows)))
    assert data.task == "classification" and data.class_labels == ["no", "yes"]
    with pytest.raises(ConfigError, match=r"row 2, column 'answer'"):
        csv_data(config("csv", path=str(tmp_path / "t.csv"), task="regression"))


def test_csv_errors(tmp_path):
    path = write_csv(tmp_path / "bad.csv", "a,b,y", ["1,2,0", "3,oops,1", "5,6,0"])
    with pytest.raises(
        ConfigError, match=r"bad.csv: row 3, column 'b' must be a finite number, got 'oops'"
    ):
        csv_data(config("csv", path=path))
    with pytest.raises(ConfigError, match="--data.path"):
        csv_data(config("csv", path=str(tmp_path / "missing.csv")))
    with pytest.raises(ConfigError, match="--data.target_column= to one of: a, b, y"):
        csv_data(
            config(
                "csv", path=write_csv(tmp_path / "ok.csv", "a,b,y", ["1,2,0"]), target_column="z"
            )
        )
    with pytest.raises(ConfigError, match="row 3 has 2 cells"):
        csv_data(config("csv", path=write_csv(tmp_path / "short.csv", "a,b,y", ["1,2,0", "1,2"])))


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=x, target=rng.integers(0, 4, 50))
    data = npz_data(
        config("npz", path=str(tmp_path / "d.npz"), target_column="target", augment_shift=1)
    )
    assert data.task == "classification" and data.num_outputs == 4 and data.input_shape == (1, 4, 4)
    assert data.augment is not None  # (C, H, W) features are images
    with pytest.raises(ConfigError, match="found keys"):
        npz_data(config("npz", path=str(tmp_path / "d.npz")))  # no 'y'


def test_custom_factory(tmp_path, monkeypatch):
    (tmp_path / "user_data.py").write_text(
        "import numpy as np\n"
        "from hone.data.base import TensorData\n"
        "def pairs(n, classes=3):\n"
        "    return np.arange(n * 2.0).reshape(n, 2), np.arange(n) % classes\n"
        "def ready():\n"
        "    import torch\n"
        "    x = torch.zeros(4, 1, 4, 4); y = torch.zeros(4, dtype=torch.long)\n"
        "    return TensorData('classification', (x, y), (x, y), (x, y), (1, 4, 4), 2)\n"
        "def wrong():\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = custom(config("custom", target="user_data:pairs", kwargs={"n": 60}))
    assert data.task == "classification" and data.num_outputs == 3 and len(data.train[0]) == 42
    regression = custom(
        config(
            "custom", target="user_data:pairs", kwargs={"n": 60, "classes": 60}, task="regression"
        )
    )
    assert regression.task == "regression" and regression.train[1].shape == (42, 1)
    ready = custom(config("custom", target="user_data:ready", augment_noise=0.5))
    assert ready.input_shape == (1, 4, 4) and ready.augment is not None
    with pytest.raises(ConfigError, match="rejected data.kwargs"):
        custom(config("custom", target="user_data:pairs", kwargs={"m": 1}))
    with pytest.raises(ConfigError, match="must return"):
        custom(config("custom", target="user_data:wrong"))
    with pytest.raises(ConfigError, match="no attribute"):
        custom(config("custom", target="user_data:nothing"))
    with pytest.raises(ConfigError, match="--data.target"):
        custom(config("custom"))
