"""Checkpoints: exact round trip, and clear refusals of corrupt, foreign, unsafe and mismatched files."""

from __future__ import annotations

import json

import pytest
import torch

from crosslocate.errors import CheckpointError
from crosslocate.model import checkpoint
from crosslocate.model.config import NetConfig
from crosslocate.model.net import build_net

CFG = NetConfig(width=0.0625, input_size_px=64)
_SIDE_EFFECTS: list[str] = []


def _mark(msg):
    _SIDE_EFFECTS.append(msg)
    return msg


class _Payload:
    """Unpickling this runs ``_mark``: only a full (unsafe) pickle load would do that."""

    def __reduce__(self):
        return (_mark, ("payload ran",))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained(seed=0):
    torch.manual_seed(seed)
    net = build_net(CFG)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 32, 32)
    net(x).pow(2).sum().backward()
    opt.step()
    return net, opt, x


def test_round_trip_weights_optimizer_epoch_meta(tmp_path):
    net, opt, x = _trained()
    path = checkpoint.save_checkpoint(tmp_path / "run" / "c.pt", net, optimizer=opt, epoch=7, meta={"lr": 1e-3})
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]  # no temp file left behind
    fresh = build_net(NetConfig(width=0.0625, input_size_px=64, init_seed=5))  # other random weights
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    net.eval()
    fresh.eval()
    assert not torch.equal(fresh(x), net(x))
    info = checkpoint.load_checkpoint(path, fresh, optimizer=fresh_opt)
    assert info["epoch"] == 7 and info["meta"] == {"lr": 1e-3} and info["format_version"] == checkpoint.FORMAT_VERSION
    assert info["net_config"] == json.loads(json.dumps(CFG.to_dict()))
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for key, st in a["state"].items():
        for name, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][key][name])), name
    # load_network rebuilds the architecture from the stored config alone
    rebuilt, meta = checkpoint.load_network(path)
    assert meta == {"lr": 1e-3} and not rebuilt.training
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))


def test_missing_and_truncated_files_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.read_checkpoint(tmp_path / "nope.pt")
    net, opt, _ = _trained()
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", net, optimizer=opt)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt") as exc:
        checkpoint.load_checkpoint(cut, build_net(CFG))
    assert "not a readable torch checkpoint" in str(exc.value)


@pytest.mark.parametrize("kind", ["text", "random", "state_dict", "dict"])
def test_foreign_files_refused(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "text":
        path.write_text("epoch,loss\n1,0.5\n")
    elif kind == "random":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "state_dict":
        torch.save(build_net(CFG).state_dict(), path)  # a plain state_dict: no magic key
    else:
        torch.save({"epoch": 3, "weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=f"{kind}.pt"):
        checkpoint.read_checkpoint(path)


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "evil.pt"
    state = {"magic": checkpoint.MAGIC, "format_version": 1, "model_state": {}, "epoch": 0, "x": _Payload()}
    torch.save(state, path)
    _SIDE_EFFECTS.clear()
    with pytest.raises(CheckpointError, match="evil.pt"):
        checkpoint.read_checkpoint(path)
    assert _SIDE_EFFECTS == []  # weights_only=True: the payload was never executed
    # the same file with an unrestricted load would run it (so the test above can fail)
    torch.load(path, weights_only=False)
    assert _SIDE_EFFECTS == ["payload ran"]


def test_newer_format_and_missing_keys_refused(tmp_path):
    net, _, _ = _trained()
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", net)
    obj = torch.load(path, weights_only=True)
    torch.save({**obj, "format_version": checkpoint.FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        checkpoint.read_checkpoint(tmp_path / "new.pt")
    torch.save({k: v for k, v in obj.items() if k != "model_state"}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="model_state"):
        checkpoint.read_checkpoint(tmp_path / "part.pt")


def test_weights_for_another_input_encoding_are_refused(tmp_path):
    from crosslocate.datasets.transforms import INPUT_ENCODING

    net, _, _ = _trained()
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", net)
    obj = torch.load(path, weights_only=True)
    assert obj["input_encoding"] == INPUT_ENCODING
    # a checkpoint from before encodings were recorded (version 1: inverse depth, sky -1)
    torch.save({k: v for k, v in obj.items() if k != "input_encoding"}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old\.pt: the network was trained on input encoding 1.*Retrain"):
        checkpoint.load_network(tmp_path / "old.pt")
    torch.save({**obj, "input_encoding": INPUT_ENCODING + 1}, tmp_path / "next.pt")
    with pytest.raises(CheckpointError, match="input encoding"):
        checkpoint.load_checkpoint(tmp_path / "next.pt", build_net(net.config))


def test_architecture_mismatch_and_missing_optimizer_state(tmp_path):
    net, _, _ = _trained()
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", net, epoch=1)  # no optimizer
    other = build_net(NetConfig(width=0.0625, input_size_px=64, pooling="gem"))
    with pytest.raises(CheckpointError, match="pooling"):
        checkpoint.load_checkpoint(path, other)
    wider = build_net(NetConfig(width=0.125, input_size_px=64))
    with pytest.raises(CheckpointError, match="width"):
        checkpoint.load_checkpoint(path, wider)
    # a network without a config (foreign module): the strict state_dict load reports the misfit
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint.load_checkpoint(path, torch.nn.Linear(2, 2))
    fresh = build_net(CFG)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        checkpoint.load_checkpoint(path, fresh, optimizer=torch.optim.Adam(fresh.parameters()))
    # the input size is not part of the architecture: loading at another size works
    assert checkpoint.load_checkpoint(path, build_net(NetConfig(width=0.0625, input_size_px=128)))["epoch"] == 1


def test_checkpoint_without_newer_config_fields_still_matches():
    """A checkpoint saved before a NetConfig field existed matches a net with that field's default."""
    from crosslocate.model.checkpoint import _arch_mismatch
    from crosslocate.model.config import NetConfig
    from crosslocate.model.net import build_net

    net = build_net(NetConfig(width=1 / 16, input_size_px=32))
    old = {k: v for k, v in net.config.to_dict().items() if k not in ("vlad_clusters", "mix_rows")}
    assert _arch_mismatch(old, net) == []
    assert _arch_mismatch({**old, "vlad_clusters": 8}, net) == ["vlad_clusters: checkpoint 8 vs net 16"]


def test_check_run_record_refuses_unfinished_foreign_and_unrecorded(tmp_path):
    qs = {"id": "a" * 64, "source": "synthetic", "n_queries": 800}
    meta = {"run_id": "r1", "epochs_planned": 12, "finished": True, "query_set": qs, "metrics": {"epoch": 12}}
    path = tmp_path / "checkpoint.pt"
    checkpoint.check_run_record(path, meta, query_set_id="a" * 64)  # the run's own query set: accepted
    with pytest.raises(CheckpointError, match=r"stopped after epoch 5 of 12.*--resume"):
        checkpoint.check_run_record(path, {**meta, "finished": False, "metrics": {"epoch": 5}}, query_set_id="a" * 64)
    # best.pt of an unfinished run is not judged on its own finish, but must be the run's own
    checkpoint.check_run_record(path, {**meta, "finished": False}, query_set_id="a" * 64, finished=False, run_id="r1")
    with pytest.raises(CheckpointError, match="another training run"):
        checkpoint.check_run_record(path, meta, query_set_id="a" * 64, finished=False, run_id="r2")
    with pytest.raises(CheckpointError, match=r"another query set \(synthetic, 800 queries"):
        checkpoint.check_run_record(path, meta, query_set_id="b" * 64)
    with pytest.raises(CheckpointError, match="older"):
        checkpoint.check_run_record(path, {"metrics": {}}, query_set_id="a" * 64)
