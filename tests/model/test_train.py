"""Training loop on a tiny learnable world: loss goes down, retrieval beats the untrained net, resume works.

The world: every grid position has its own random horizon panorama. A database view (depth) shows
the panorama between yaw-30 and yaw+30 deg (terrain below the horizon at a depth that grows with the
row, sky above); a query photo (RGB) shows the same horizon with sky colour above and ground colour
below. Retrieval is learnable only by matching horizon shapes across the two modalities.
"""

from __future__ import annotations

import json
import logging
import math
import types
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from crosslocate.datasets import views
from crosslocate.datasets.queries import Query
from crosslocate.datasets.schema import SKY_DEPTH_M, VIEW_DTYPE
from crosslocate.dem.poses import Pose
from crosslocate.errors import CheckpointError, FileOverwriteError
from crosslocate.model import checkpoint
from crosslocate.model import train as T

SIZE = 24
GRID = 6  # 6 x 6 positions, 500 m apart
SPACING_M = 500.0


def _panorama(xn: float, yn: float) -> np.ndarray:
    """(360,) horizon elevation in [-1, 1] per azimuth degree; a smooth function of the position (xn, yn in [0, 1])."""
    az = np.radians(np.arange(360))
    h = (0.3 + 0.7 * xn) * np.sin(az + 1.6 * np.pi * yn)
    h += (0.2 + 0.5 * (1 - yn)) * np.sin(2 * az + np.pi * xn) + 0.3 * np.sin(3 * az + np.pi * (xn + yn))
    return h / 1.5


def _horizon_rows(pano: np.ndarray, yaw: float) -> np.ndarray:
    cols = (yaw - 30 + 60 * (np.arange(SIZE) + 0.5) / SIZE) % 360
    return SIZE / 2 - pano[cols.astype(int) % 360] * SIZE / 3


def _depth_view(pano, yaw):
    rows = np.arange(SIZE)[:, None] + 0.5
    horizon = _horizon_rows(pano, yaw)[None]
    depth = np.where(rows > horizon, 50_000.0 / (1 + rows - horizon), SKY_DEPTH_M)
    return depth.astype(np.float32)


def _photo(pano, yaw, rng):
    rows = np.arange(SIZE)[:, None] + 0.5
    ground = rows > _horizon_rows(pano, yaw)[None]
    img = np.where(ground[..., None], [90, 110, 60], [150, 190, 235]).astype(np.float64)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


class _ArrayDatabase:
    store: ClassVar[dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def __init__(self, db_dir):
        self._table, self._depth = self.store[str(db_dir)]
        self.n_views = len(self._table)

    def table(self):
        return self._table.copy()

    def read(self, modality, index):
        return self._depth[index]

    def close(self):
        pass


@pytest.fixture
def world(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    panos = [_panorama((p % GRID) / (GRID - 1), (p // GRID) / (GRID - 1)) for p in range(GRID * GRID)]
    yaws = np.arange(12) * 30.0
    table = np.zeros(GRID * GRID * 12, VIEW_DTYPE)
    depth = np.zeros((len(table), SIZE, SIZE), np.float32)
    for p in range(GRID * GRID):
        for j, yaw in enumerate(yaws):
            i = p * 12 + j
            table[i]["view_id"], table[i]["position_id"] = i, p
            table[i]["x"], table[i]["y"] = SPACING_M * (p % GRID), SPACING_M * (p // GRID)
            table[i]["yaw_deg"], table[i]["fov_deg"] = yaw, 60.0
            depth[i] = _depth_view(panos[p], yaw)
    db_dir = tmp_path / "db"
    _ArrayDatabase.store[str(db_dir)] = (table, depth)
    monkeypatch.setattr(views, "_open_database", lambda d: _ArrayDatabase(d))
    queries, qxy, qyaw = [], [], []
    (tmp_path / "q").mkdir()
    from PIL import Image

    for n in range(2 * GRID * GRID):
        p = n % (GRID * GRID)
        yaw = float(rng.choice(yaws) + rng.uniform(-8, 8)) % 360
        path = tmp_path / "q" / f"{n:03d}.png"
        Image.fromarray(_photo(panos[p], yaw, rng)).save(path)
        queries.append(Query(str(path), Pose(lon=7.0, lat=46.0, alt_m=1000.0, yaw_deg=yaw, fov_deg=60.0)))
        qxy.append((SPACING_M * (p % GRID), SPACING_M * (p // GRID)))
        qyaw.append(yaw)
    qxy, qyaw = np.array(qxy, float), np.array(qyaw, float)
    # hold out the queries of every third position (interleaved with the training ones)
    held = np.array([(n % (GRID * GRID)) % 3 == 1 for n in range(len(queries))])
    return types.SimpleNamespace(db_dir=db_dir, queries=queries, qxy=qxy, qyaw=qyaw, held=held)


def _queryset(world, mask):
    idx = np.flatnonzero(mask)
    ds = views.QueryDataset([world.queries[i] for i in idx], SIZE, fov_scaling=True)
    return T.QuerySet(ds, world.qxy[idx], world.qyaw[idx])


class _TinyNet(nn.Module):
    """Small conv net; the descriptor is the flattened (spatial) feature map, L2-normalised."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
        )

    def forward(self, x):
        return torch.nn.functional.normalize(self.f(x).flatten(1), dim=1)


# Reference implementations used only while F1's modules are not importable (same documented rules).
def _ref_mine_tuples(qd, dd, qxy, qyaw, dxy, dyaw, *, pos_radius_m, pos_yaw_deg, neg_min_dist_m, n_negatives):
    dist = np.linalg.norm(qxy[:, None] - dxy[None], axis=2)
    dyw = np.abs((qyaw[:, None] - dyaw[None] + 180) % 360 - 180)
    sim = qd @ dd.T
    ok_pos = (dist <= pos_radius_m) & (dyw <= pos_yaw_deg)
    pos = np.where(ok_pos, sim, -np.inf).argmax(axis=1)
    neg = np.argsort(-np.where(dist >= neg_min_dist_m, sim, -np.inf), axis=1)[:, :n_negatives]
    return pos, neg, ok_pos.any(axis=1)


def _ref_triplet_loss(a, p, n, margin):
    dp = (a - p).pow(2).sum(-1)
    dn = (a[:, None] - n).pow(2).sum(-1)
    return torch.clamp(dp[:, None] - dn + margin, min=0).sum(-1).mean()


def _cfg(**kw):
    base = {
        "epochs": 12,
        "batch_size": 8,
        "lr": 1e-3,
        "margin": 0.1,
        "pos_radius_m": 20.0,
        "pos_yaw_deg": 15.0,
        "neg_min_dist_m": 1000.0,
        "n_negatives": 5,
        "seed": 0,
        "num_workers": 0,
        "augment": False,
        "embed_batch_size": 32,
    }
    base.update(kw)
    from crosslocate.model.config import TrainConfig

    return TrainConfig(**base)


def _fixed_tuple_loss(net, trainq, pool, pos, neg):
    """Mean reference triplet loss (margin 0.1) of fixed tuples, computed outside the loop."""
    dev = torch.device("cpu")
    qd = torch.from_numpy(T.extract_descriptors(net, trainq.dataset, dev, batch_size=64))
    dd = torch.from_numpy(T.extract_descriptors(net, pool, dev, batch_size=64))
    return float(_ref_triplet_loss(qd, dd[pos], dd[neg], 0.1))


def test_training_lowers_loss_and_beats_untrained(world, tmp_path):
    torch.manual_seed(0)
    net = _TinyNet()
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth")])
    trainq, heldq = _queryset(world, ~world.held), _queryset(world, world.held)
    dev = torch.device("cpu")

    def recall(n):
        qd = T.extract_descriptors(n, heldq.dataset, dev, batch_size=64)
        dd = T.extract_descriptors(n, pool, dev, batch_size=64)
        return T.validation_recall(qd, dd, heldq.xy, pool.xy, ns=(1, 5), threshold_m=20.0)

    # tuples mined once with the untrained net (true positive, 5 hardest negatives >= 1 km)
    qd0 = T.extract_descriptors(net, trainq.dataset, dev)
    dd0 = T.extract_descriptors(net, pool, dev)
    pos, neg, _ = _ref_mine_tuples(
        qd0,
        dd0,
        trainq.xy,
        trainq.yaw_deg,
        pool.xy,
        pool.yaw_deg,
        pos_radius_m=20.0,
        pos_yaw_deg=15.0,
        neg_min_dist_m=1000.0,
        n_negatives=5,
    )
    loss_before = _fixed_tuple_loss(net, trainq, pool, pos, neg)
    before = recall(net)
    res = T.train(net, trainq, pool, _cfg(), tmp_path / "run", dev, val=(heldq, pool))
    after = recall(net)
    assert _fixed_tuple_loss(net, trainq, pool, pos, neg) < 0.5 * loss_before
    epochs = [h for h in res.history if h["epoch"] > 0]
    assert all(h["n_tuples"] == len(trainq.dataset) for h in epochs)  # every query sits on a position
    # 36 positions x 12 yaws: R@1 within 20 m by chance ~ 1/36 per query. The untrained net is well
    # above it (0.33 / 0.62 at R@1 / R@5): the depth encoding has the photos' polarity (sky brightest)
    assert after[1] >= before[1] + 0.15 and after[5] >= before[5] + 0.2
    hist = json.loads((tmp_path / "run" / T.METRICS_JSON).read_text())
    # epoch 0 = the initial weights on validation (the baseline of model selection)
    assert [h["epoch"] for h in hist] == list(range(13)) and "val_recall@1_1km" in hist[0]
    assert (tmp_path / "run" / T.METRICS_CSV).read_text().startswith("epoch,val_recall")
    # best.pt holds the epoch with the best validation recall (never worse than the initial weights)
    # (val_score = mean recall@1..10 within 1 km, by hand from the logged recall@1, @5, @10 bounds)
    for h in hist:
        assert h["val_recall@1_1km"] <= h["val_score"] <= h["val_recall@10_1km"]
        assert h["val_recall@1_1km"] <= h["val_recall@5_1km"] <= h["val_recall@10_1km"]
    best = max(hist, key=lambda h: (h["val_score"], h["val_recall@1_1km"]))
    saved = torch.load(tmp_path / "run" / T.BEST_NAME, weights_only=True)
    assert saved["epoch"] == best["epoch"] and best["epoch"] > 0


def test_resume_continues_from_saved_epoch(world, tmp_path, caplog):
    mask = np.arange(len(world.queries)) < 16
    trainq = _queryset(world, mask)
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth", indices=np.arange(0, 432, 3))])
    dev = torch.device("cpu")
    # the decaying lr and the in-batch negatives must resume exactly too
    kw = {"neg_min_dist_m": 500.0, "lr_decay": 0.5, "batch_negatives": True}
    torch.manual_seed(1)
    full = _TinyNet()
    init = {k: v.clone() for k, v in full.state_dict().items()}
    ref = T.train(full, trainq, pool, _cfg(epochs=2, **kw), tmp_path / "a", dev)

    part = _TinyNet()
    part.load_state_dict(init)
    threads = torch.get_num_threads()
    try:  # each epoch's row says how many CPU threads it ran on; a resume on another count warns
        torch.set_num_threads(1)
        T.train(part, trainq, pool, _cfg(epochs=1, **kw), tmp_path / "b", dev)
        stopped = checkpoint.read_checkpoint(tmp_path / "b" / T.CHECKPOINT_NAME)["meta"]
        assert stopped["finished"] is True and stopped["epochs_planned"] == 1  # a finished 1-epoch run
        with pytest.raises(FileOverwriteError, match="--resume"):
            T.train(part, trainq, pool, _cfg(epochs=2, **kw), tmp_path / "b", dev)
        again = _TinyNet()  # fresh weights: everything must come from the checkpoint
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="crosslocate.model.train"):
            res = T.train(again, trainq, pool, _cfg(epochs=2, **kw), tmp_path / "b", dev, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert [h["threads"] for h in res.history] == [1, 2] and ref.history[-1]["threads"] == threads
    warned = [r.getMessage() for r in caplog.records if "CPU threads" in r.getMessage()]
    assert warned == [
        "epoch 1 ran on 1 CPU threads, this resume on 2: the run goes on along another path "
        "than an uninterrupted one would (set OMP_NUM_THREADS=1 to match)"
    ]
    # the run keeps its id across the resume; a fresh run gets another one
    meta = checkpoint.read_checkpoint(tmp_path / "b" / T.CHECKPOINT_NAME)["meta"]
    assert meta["run_id"] == stopped["run_id"] and meta["finished"] and meta["epochs_planned"] == 2
    assert checkpoint.read_checkpoint(tmp_path / "a" / T.CHECKPOINT_NAME)["meta"]["run_id"] != meta["run_id"]
    assert [h["lr"] for h in res.history] == pytest.approx([1e-3, 5e-4])
    assert math.isclose(res.history[1]["loss"], ref.history[1]["loss"], rel_tol=1e-4)
    for k, v in full.state_dict().items():
        assert torch.allclose(v, again.state_dict()[k], atol=1e-5), k


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("ema_decay", [0.0, 0.99], ids=["raw", "weight-average"])
def test_a_run_trained_on_the_gpu_resumes_on_the_cpu(world, tmp_path, ema_decay, fp32_cuda):
    """Train epoch 1 on CUDA, epoch 2 on the CPU from its checkpoint: the CPU-only run's losses and
    weights (fp32 on both sides: TF32 off), so a GPU run can be finished or evaluated without a GPU;
    with the weight average too, whose copy moves with the checkpoint."""
    trainq = _queryset(world, np.arange(len(world.queries)) < 16)
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth", indices=np.arange(0, 432, 3))])

    def run(net, epochs, folder, device, **kw):
        cfg = _cfg(epochs=epochs, neg_min_dist_m=500.0, ema_decay=ema_decay)
        return T.train(net, trainq, pool, cfg, tmp_path / folder, torch.device(device), **kw)

    torch.manual_seed(1)
    full = _TinyNet()
    init = {k: v.clone() for k, v in full.state_dict().items()}
    ref = run(full, 2, "cpu", "cpu")
    gpu = _TinyNet()
    gpu.load_state_dict(init)
    gpu.to(fp32_cuda)  # train() runs the net where it is; the flow moves it to the resolved device
    run(gpu, 1, "b", "cuda")
    assert next(gpu.parameters()).device.type == "cuda"
    cpu = _TinyNet()
    res = run(cpu, 2, "b", "cpu", resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert math.isclose(res.history[0]["loss"], ref.history[0]["loss"], rel_tol=1e-4)  # epoch 1, on the GPU
    assert math.isclose(res.history[1]["loss"], ref.history[1]["loss"], rel_tol=1e-3)  # epoch 2, resumed on the CPU
    # Adam's steps on near-zero gradients amplify rounding, so the weights are compared against how
    # far the two epochs moved them rather than elementwise
    for k, v in full.state_dict().items():
        moved, apart = (v - init[k]).norm(), (v - cpu.state_dict()[k]).norm()
        assert apart <= 0.05 * moved, (k, float(apart), float(moved))


class _TinyBNNet(_TinyNet):
    """_TinyNet with a BatchNorm layer: running statistics and a batch counter among its buffers."""

    def __init__(self):
        super().__init__()
        self.f.insert(3, nn.BatchNorm2d(32))


def test_update_average_by_hand():
    torch.manual_seed(0)
    avg, net = _TinyBNNet(), _TinyBNNet()
    net.f[3].running_mean.fill_(2.0)
    net.f[3].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in avg.state_dict().items()}
    T.update_average(avg, net, 0.75)
    for k, a in avg.state_dict().items():
        w = net.state_dict()[k]
        want = w if k.endswith("num_batches_tracked") else 0.75 * before[k] + 0.25 * w
        assert torch.allclose(a, want, atol=1e-7), k
    assert float(avg.f[3].running_mean[0]) == pytest.approx(0.75 * 0.0 + 0.25 * 2.0)
    assert int(avg.f[3].num_batches_tracked) == 7
    copy_ = T.averaged_copy(net)
    assert not copy_.training and not any(p.requires_grad for p in copy_.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in copy_.state_dict().items())
    assert all(p.requires_grad for p in net.parameters())  # the trained net is left alone


def _one_step_run(world, tmp_path, name, epochs, **kw):
    """A run of ``epochs`` epochs of exactly one optimiser step each (8 tuples, batch 8); returns the net,
    the result and the net's weights after every epoch (epoch 0: the initial ones)."""
    trainq = _queryset(world, np.arange(len(world.queries)) < 16)
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth", indices=np.arange(0, 432, 3))])
    torch.manual_seed(3)
    net = _TinyBNNet()
    snaps = [{k: v.clone() for k, v in net.state_dict().items()}]
    cfg = _cfg(epochs=epochs, max_tuples=8, batch_size=8, neg_min_dist_m=500.0, **kw)
    res = T.train(
        net,
        trainq,
        pool,
        cfg,
        tmp_path / name,
        torch.device("cpu"),
        on_epoch=lambda row: snaps.append({k: v.clone() for k, v in net.state_dict().items()}),
    )
    return net, res, snaps


def test_weight_average_follows_the_raw_trajectory_and_is_what_the_run_keeps(world, tmp_path):
    d = 0.6
    _, plain, raw = _one_step_run(world, tmp_path, "plain", 3)
    net, res, snaps = _one_step_run(world, tmp_path, "ema", 3, ema_decay=d)
    assert all(0 < h["n_tuples"] <= 8 for h in res.history)  # one step (batch 8) per epoch
    # the average never feeds back into training: the raw weights follow the plain run's path
    for k, v in raw[-1].items():
        assert torch.allclose(v, snaps[-1][k], atol=1e-6), k
    # by hand over the 3 one-step epochs: d^3 w0 + d^2 (1-d) w1 + d (1-d) w2 + (1-d) w3
    coef = [d**3, d**2 * (1 - d), d * (1 - d), 1 - d]
    state = checkpoint.read_checkpoint(tmp_path / "ema" / T.CHECKPOINT_NAME)
    for k, avg in state["model_state"].items():
        if k.endswith("num_batches_tracked"):
            assert int(avg) == int(snaps[-1][k])
            continue
        want = sum(c * s[k] for c, s in zip(coef, snaps, strict=True))
        assert torch.allclose(avg, want, atol=1e-6), k
        assert torch.allclose(state["train_state"][k], snaps[-1][k], atol=1e-7), k  # the raw weights ride along
    assert "train_state" not in checkpoint.read_checkpoint(tmp_path / "plain" / T.CHECKPOINT_NAME)
    # what every reader scores (load_network, the benchmark) is the average, not the raw weights
    scored = _TinyBNNet()
    checkpoint.load_checkpoint(tmp_path / "ema" / T.CHECKPOINT_NAME, scored)
    assert not torch.allclose(scored.f[0].weight, net.f[0].weight)
    assert plain.history[-1]["loss"] == pytest.approx(res.history[-1]["loss"], rel=1e-5)


def test_weight_average_resumes_exactly_and_refuses_a_checkpoint_without_one(world, tmp_path):
    _one_step_run(world, tmp_path, "full", 3, ema_decay=0.6)
    _one_step_run(world, tmp_path, "part", 2, ema_decay=0.6)
    trainq = _queryset(world, np.arange(len(world.queries)) < 16)
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth", indices=np.arange(0, 432, 3))])
    cfg = _cfg(epochs=3, max_tuples=8, batch_size=8, neg_min_dist_m=500.0, ema_decay=0.6)
    again = _TinyBNNet()  # fresh weights: the raw and the averaged ones must both come from the file
    T.train(again, trainq, pool, cfg, tmp_path / "part", torch.device("cpu"), resume=True)
    done = {n: checkpoint.read_checkpoint(tmp_path / n / T.CHECKPOINT_NAME) for n in ("full", "part")}
    for key in ("model_state", "train_state"):
        for k, v in done["full"][key].items():
            assert torch.allclose(v.float(), done["part"][key][k].float(), atol=1e-5), (key, k)
    _one_step_run(world, tmp_path, "plain", 1)
    with pytest.raises(CheckpointError, match="no train_state"):
        T.train(_TinyBNNet(), trainq, pool, cfg, tmp_path / "plain", torch.device("cpu"), resume=True)


def test_validation_scores_the_weight_average(world, tmp_path):
    trainq, heldq = _queryset(world, ~world.held), _queryset(world, world.held)
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth")])
    torch.manual_seed(0)
    cfg = _cfg(epochs=2, ema_decay=0.9)
    T.train(_TinyBNNet(), trainq, pool, cfg, tmp_path / "run", torch.device("cpu"), val=(heldq, pool))
    last = json.loads((tmp_path / "run" / T.METRICS_JSON).read_text())[-1]
    for key, want in ((None, last), ("train_state", None)):
        net = _TinyBNNet().eval()
        state = checkpoint.read_checkpoint(tmp_path / "run" / T.CHECKPOINT_NAME)
        net.load_state_dict(state[key or "model_state"])
        dev = torch.device("cpu")
        qd = T.extract_descriptors(net, heldq.dataset, dev, batch_size=64)
        dd = T.extract_descriptors(net, pool, dev, batch_size=64)
        rec = T.validation_recall(qd, dd, heldq.xy, pool.xy, ns=range(1, 11), threshold_m=1000.0)
        score = float(np.mean([rec[n] for n in range(1, 11)]))
        if want is not None:  # the logged validation is the averaged network's, recomputed here
            assert score == pytest.approx(want["val_score"]) and rec[1] == pytest.approx(want["val_recall@1_1km"])
        else:
            raw_score = score
    assert raw_score != pytest.approx(last["val_score"]) or rec[1] != pytest.approx(last["val_recall@1_1km"])


def test_weight_average_decay_is_validated():
    from crosslocate.errors import ConfigError

    for bad in (1.0, -0.1, float("nan"), "0.9"):
        with pytest.raises(ConfigError, match="ema_decay"):
            _cfg(ema_decay=bad)
    assert _cfg(ema_decay=0.0).ema_decay == 0.0


def test_tuple_loss_follows_the_config():
    from crosslocate.errors import ConfigError
    from crosslocate.model import functional as F

    g = torch.Generator().manual_seed(1)
    q, p = F.l2n(torch.randn(4, 6, generator=g)), F.l2n(torch.randn(4, 6, generator=g))
    n = F.l2n(torch.randn(4, 3, 6, generator=g), dim=2)
    mask = torch.tensor([[True, False, True]] * 4)
    infonce = T.tuple_loss(_cfg(loss="infonce", temperature=0.2))
    torch.testing.assert_close(infonce(q, p, n, mask=mask), F.infonce_loss(q, p, n, temperature=0.2, mask=mask))
    triplet = T.tuple_loss(_cfg(margin=0.3))
    torch.testing.assert_close(triplet(q, p, n), F.triplet_loss(q, p, n, margin=0.3))
    assert float(infonce(q, p, n)) != pytest.approx(float(triplet(q, p, n)))
    with pytest.raises(ConfigError, match=r"TrainConfig.loss='hinge'; choose one of triplet, infonce"):
        _cfg(loss="hinge")
    with pytest.raises(ConfigError, match="temperature"):
        _cfg(loss="infonce", temperature=0.0)


def test_infonce_run_trains_on_the_same_tuples(world, tmp_path):
    """Same mining, other loss: the first epoch's tuples are the triplet run's, the weights move, and the
    logged loss is InfoNCE's (about log(1 + K) at the start, far above the triplet hinge)."""
    _, plain, w_plain = _one_step_run(world, tmp_path, "triplet", 1)
    _, res, w = _one_step_run(world, tmp_path, "infonce", 1, loss="infonce", temperature=0.1)
    (h0,), (h1,) = plain.history[-1:], res.history[-1:]
    assert (h1["n_tuples"], h1["n_hard"], h1["n_cached"]) == (h0["n_tuples"], h0["n_hard"], h0["n_cached"])
    assert np.isfinite(h1["loss"]) and h1["loss"] > h0["loss"]
    moved = [k for k in w[0] if w[0][k].is_floating_point() and not torch.equal(w[0][k], w[-1][k])]
    assert moved and any(not torch.allclose(w[-1][k], w_plain[-1][k]) for k in moved)


def test_validation_recall_by_hand():
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    d = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], np.float32)
    qxy = np.array([[0.0, 0.0], [0.0, 0.0]])
    dxy = np.array([[5000.0, 0.0], [10.0, 0.0], [0.0, 900.0]])
    # query 0 ranks d1 (10 m away: hit), query 1 ranks d0 (5 km: miss) then d2 (900 m: hit)
    r = T.validation_recall(q, d, qxy, dxy, ns=(1, 2), threshold_m=1000.0)
    assert r == {1: 0.5, 2: 1.0}


class _Pool:
    def __init__(self, xy, yaw):
        self.xy, self.yaw_deg = np.asarray(xy, float), np.asarray(yaw, float)

    def __len__(self):
        return len(self.xy)


def test_epoch_selection_caches_positives_and_a_negative_sample_and_maps_back():
    from crosslocate.model.config import TrainConfig

    # pool: 1000 views on a 10 km line every 10 m, yaw 0; queries at 0 m and 5000 m (yaw 5), one at 20 km
    pool = _Pool(np.c_[np.arange(1000) * 10.0, np.zeros(1000)], np.zeros(1000))
    q = types.SimpleNamespace(
        xy=np.array([[0.0, 0.0], [5000.0, 3.0], [20_000.0, 0.0]]), yaw_deg=np.array([5.0, 5.0, 0.0])
    )
    cfg = TrainConfig(
        pos_radius_m=20.0, n_negatives=3, neg_pool_size=50, neg_hardest=10, cache_size=100, seed=1, max_tuples=None
    )
    q_idx, cache, n_without = T.epoch_selection(cfg, q, pool, epoch=1)
    assert sorted(q_idx.tolist()) == [0, 1] and n_without == 1  # the query 20 km away has no positive
    # positives by hand: views 0,1,2 (0, 10, 20 m) for query 0; 499..501 for query 1 (498: hypot(20, 3) > 20 m)
    assert {0, 1, 2, 499, 500, 501} <= set(cache.tolist())
    assert 100 <= cache.size <= 106 and np.all(np.diff(cache) > 0)
    again = T.epoch_selection(cfg, q, pool, epoch=1)
    assert np.array_equal(again[1], cache) and not np.array_equal(T.epoch_selection(cfg, q, pool, epoch=2)[1], cache)
    # descriptors: a query's descriptor equals that of pool view 1 (query 0) / 501 (query 1)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(1000, 8)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pos, neg, valid = T.mine_epoch(cfg, d[np.where(q_idx == 0, 1, 501)], d[cache], q, pool, q_idx, cache, 1)
    assert valid.all()
    assert pos.tolist() == [1 if i == 0 else 501 for i in q_idx]  # pool indices, not cache positions
    far = np.abs(pool.xy[neg][..., 0] - q.xy[q_idx][:, None, 0]) >= cfg.neg_min_dist_m
    assert far.all() and np.isin(neg, cache).all()


def test_epoch_selection_adds_the_queries_neighbourhood_views_to_the_cache():
    from crosslocate.model.config import TrainConfig

    # pool: a 100 km line every 10 m, yaw 0 on even views and 180 on odd ones; one query at 50 km, yaw 10
    n = 10_000
    x = np.arange(n) * 10.0
    pool = _Pool(np.c_[x, np.zeros(n)], np.where(np.arange(n) % 2 == 0, 0.0, 180.0))
    q = types.SimpleNamespace(xy=np.array([[50_000.0, 0.0]]), yaw_deg=np.array([10.0]))
    base = dict(pos_radius_m=20.0, n_negatives=2, neg_pool_size=50, neg_hardest=10, cache_size=100, seed=4)
    assert TrainConfig().near_negatives == 0
    plain = T.epoch_selection(TrainConfig(**base), q, pool, epoch=1)[1]
    # by hand: 2-5 km from x = 50 km (x in [45, 48] or [52, 55] km: 2 x 301 views), facing within 45 deg of 10 (even)
    ring = np.flatnonzero((np.abs(x - 50_000.0) >= 2000) & (np.abs(x - 50_000.0) <= 5000))
    ring = ring[ring % 2 == 0]
    assert ring.size == 302
    every = T.epoch_selection(TrainConfig(**base, near_negatives=1000), q, pool, epoch=1)[1]
    # the random sample and the positives are the same draw as without near negatives; the ring is added whole
    assert set(plain.tolist()) | set(ring.tolist()) == set(every.tolist())
    some = T.epoch_selection(TrainConfig(**base, near_negatives=50), q, pool, epoch=1)[1]
    extra = np.setdiff1d(some, plain)
    assert set(plain.tolist()) <= set(some.tolist()) and 45 <= extra.size <= 50 and np.isin(extra, ring).all()
    # no effect when the whole pool is cached
    whole = dict(base, cache_size=None)
    got = T.epoch_selection(TrainConfig(**whole, near_negatives=50), q, pool, epoch=1)[1]
    assert np.array_equal(got, np.arange(n))


def test_near_negative_settings_are_validated():
    from crosslocate.errors import ConfigError
    from crosslocate.model.config import TrainConfig

    for bad, match in (
        (dict(near_negatives=-1), "near_negatives"),
        (dict(near_negatives=1.5), "near_negatives"),
        (dict(near_radius_m=2000.0), "near_radius_m"),
        (dict(near_yaw_deg=181.0), "near_yaw_deg"),
        (dict(near_yaw_deg=-1.0), "near_yaw_deg"),
    ):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)


def test_batch_negatives_are_the_far_views_of_the_batch():
    """2 tuples x (positive + 1 negative); query 0 at the origin, query 1 at 5 km east."""
    views_ = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)
    q_xy = np.array([[0.0, 0.0], [5000.0, 0.0]])
    view_xy = np.array([[[10.0, 0.0], [3000.0, 0.0]], [[5000.0, 10.0], [5000.0, 1500.0]]])
    neg, mask = T.batch_negative_mask(views_, q_xy, view_xy, 2000.0)
    assert neg.shape == (2, 4, 3) and torch.equal(neg[1], views_.reshape(4, 3))
    # query 0: its positive (10 m) no, its negative (3 km) yes, tuple 1's views (5 km, 5.2 km) yes
    # query 1: tuple 0's positive (4.99 km) yes, tuple 0's negative (2 km) yes, its own (10 m, 1.5 km) no
    assert mask.tolist() == [[False, True, True, True], [True, True, False, False]]


def test_epoch_lr_decays_geometrically():
    cfg = types.SimpleNamespace(lr=1e-3, lr_decay=0.5)
    assert [T.epoch_lr(cfg, e) for e in (1, 2, 3)] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert T.epoch_lr(types.SimpleNamespace(lr=2e-5), 9) == pytest.approx(2e-5)  # no lr_decay: constant


def test_two_branch_net_routes_queries_and_views_through_their_own_weights(world, tmp_path):
    from crosslocate.model.config import NetConfig
    from crosslocate.model.net import build_net

    net = build_net(NetConfig(width=0.0625, input_size_px=SIZE, two_branch=True))
    x = torch.randn(2, 3, 3, SIZE, SIZE)  # two tuples: query, positive, negative
    desc = T.embed_tuples(net.eval(), x)
    assert desc.shape == (2, 3, net.out_dim)
    assert torch.allclose(desc[:, 0], net(x[:, 0], branch="query"), atol=1e-6)
    assert torch.allclose(desc[:, 2], net(x[:, 2], branch="database"), atol=1e-6)
    assert not torch.allclose(desc[:, 1], net(x[:, 1], branch="query"), atol=1e-3)
    trainq = _queryset(world, np.arange(len(world.queries)) < 8)
    pool = T.ViewPool.of([views.ViewDataset(world.db_dir, "depth", indices=np.arange(0, 432, 3))])
    dev = torch.device("cpu")
    qd = T.extract_descriptors(net, trainq.dataset, dev, batch_size=4)
    q0 = net(trainq.dataset.encode(0)[None], branch="query")
    assert np.allclose(qd[0], torch.nn.functional.normalize(q0, dim=1)[0].detach().numpy(), atol=1e-5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = T.train(net, trainq, pool, _cfg(epochs=1, neg_min_dist_m=500.0), tmp_path / "run", dev)
    assert np.isfinite(res.history[0]["loss"])
    for name in ("branches.query.", "branches.database."):  # both branches were optimised
        assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items() if k.startswith(name))
