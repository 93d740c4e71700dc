"""`edgetl finetune` and `edgetl distill` under `torchrun` (2 CPU processes, gloo) against one process.

Both runs see the same global batches (``--batch-size`` is global; the epoch's permutation is seeded by
seed + epoch in both; 200 training images divide evenly over 2 ranks x 10), and what trains is the head
on frozen ImageNet features (no batch norm in training, dropout 0, no augmentation). DDP's gradient
average over the two halves of a batch is then the single process's mean gradient over the whole batch,
so the runs can differ only by the order of float32 sums: measured 4e-9 on the head's weights. The
tolerance, 1e-5, is far below what a real difference makes (with DDP's gradient averaging switched off,
each rank stepping on its own half-batch, the weights differ by 1.2e-2 and the epoch loss in its second
digit; a misplaced teacher row or a shard's metrics instead of the whole split show in the losses and
accuracies compared here), yet well above float noise from other BLAS kernels.

Each rank runs in its own working directory with a relative ``--out``: whatever rank 1 writes would land
in ``rank1/``, which must stay empty. A fast test checks the helpers themselves on two spawned gloo ranks
(uneven shards, gathers back in order, the global batches of the one-process permutation).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from edgetl.errors import ConfigError
from edgetl.fsutil import read_json
from edgetl.train import distributed

COMMON = ["--data", "fashion-mnist", "--limit-per-class", "20", "--image-size", "32", "--mode", "feature-extract",
          "--epochs", "2", "--batch-size", "20", "--dropout", "0", "--threads", "1", "--no-augment"]
FINETUNE = ["finetune", "--backbone", "efficientnet_lite0", *COMMON]
TOLERANCE = 1e-5

WRAPPER = """
import os, sys
os.chdir(os.path.join(sys.argv[1], "rank" + os.environ["RANK"]))
from edgetl.cli import main
main(sys.argv[2:])
"""


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"EDGETL_CACHE_DIR": str(cache), "EDGETL_OFFLINE": "1", "EDGETL_PROGRESS": "0",
                  "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def single(root: Path, args: list[str], out: str) -> Path:
    """One plain process, as without torchrun."""
    subprocess.run([sys.executable, "-m", "edgetl", *args, "--out", str(root / out)], env=_env(root / "cache-1"),
                   check=True, capture_output=True, text=True)
    return root / out


def ddp(root: Path, args: list[str], out: str) -> Path:
    """``torchrun --standalone --nproc_per_node 2``; rank r works in ``root/out-ranks/rank<r>``."""
    ranks = root / f"{out}-ranks"
    for r in (0, 1):
        (ranks / f"rank{r}").mkdir(parents=True)
    wrapper = root / "wrapper.py"
    wrapper.write_text(WRAPPER, encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(wrapper),
           str(ranks), *args, "--out", out]
    done = subprocess.run(cmd, env=_env(root / "cache-2"), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # every rank exited cleanly
    return ranks


def assert_same_training(a: Path, b: Path) -> None:
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert len(ma["history"]) == len(mb["history"]) == 2
    for ra, rb in zip(ma["history"], mb["history"], strict=True):
        assert ra["val_accuracy"] == rb["val_accuracy"]  # over the whole validation split, not one shard
        for key in ("train_loss", "train_accuracy", *(k for k in ra if k.startswith("loss_"))):
            assert abs(ra[key] - rb[key]) <= TOLERANCE, (key, ra[key], rb[key])
    assert ma["test"]["n"] == mb["test"]["n"] == 50
    assert ma["test"]["accuracy"] == mb["test"]["accuracy"]
    assert ma["best_epoch"] == mb["best_epoch"]
    wa, wb = load_file(a / "weights.safetensors"), load_file(b / "weights.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
    assert worst <= TOLERANCE, worst


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    teacher = single(root, FINETUNE, "finetune-1")
    distill = ["distill", "--teacher", str(teacher), "--student", "efficientnet_lite0", *COMMON, "--compare",
               "--no-latency"]
    return {"root": root, "finetune-1": teacher, "finetune-2": ddp(root, FINETUNE, "finetune-2"),
            "distill-1": single(root, distill, "distill-1"), "distill-2": ddp(root, distill, "distill-2")}


@pytest.mark.slow
def test_finetune_under_torchrun_matches_one_process(runs: dict[str, Path]) -> None:
    ranks = runs["finetune-2"]
    assert_same_training(runs["finetune-1"], ranks / "rank0" / "finetune-2")
    assert not any((ranks / "rank1").iterdir())  # rank 1 wrote nothing
    assert sorted(p.name for p in (ranks / "rank0").iterdir()) == ["finetune-2"]  # no staging folder left


@pytest.mark.slow
def test_frozen_prefix_cache_is_gathered_whole(runs: dict[str, Path]) -> None:
    """Each rank computed a strided shard of the frozen features; the gathered cache is the whole one."""
    one, two = runs["root"] / "cache-1" / "features", runs["root"] / "cache-2" / "features"
    names = sorted(p.name for p in one.iterdir() if p.suffix == ".npy")
    assert len(names) >= 4  # train and val features + labels (the distill no-KD student's share the keys)
    assert names == sorted(p.name for p in two.iterdir() if p.suffix == ".npy")
    for name in names:
        assert np.array_equal(np.load(one / name), np.load(two / name)), name


@pytest.mark.slow
def test_distill_with_cached_teacher_logits_under_torchrun_matches_one_process(runs: dict[str, Path]) -> None:
    ranks = runs["distill-2"]
    a, b = runs["distill-1"], ranks / "rank0" / "distill-2"
    assert_same_training(a, b)
    da, db = read_json(a / "metrics.json")["distill"], read_json(b / "metrics.json")["distill"]
    assert da["teacher_outputs"] == db["teacher_outputs"] == "cached"
    assert da["comparison"].keys() == db["comparison"].keys() == {"teacher", "student_no_kd", "student_kd"}
    for key in da["comparison"]:
        assert da["comparison"][key]["accuracy"] == db["comparison"][key]["accuracy"], key
    assert (b / "distill.yaml").is_file() and (b / "distillation.png").is_file()
    assert not any((ranks / "rank1").iterdir())


def _helpers_on_rank(rank: int, port: int) -> None:
    """One of two gloo ranks: shards of 5 (uneven), gathers, sums, agreement, the global batches."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    with distributed.session() as ctx:
        assert (ctx.rank, ctx.world, ctx.active, ctx.main) == (rank, 2, True, rank == 0)
        data = torch.utils.data.TensorDataset(torch.arange(5))
        shard = distributed.eval_loader(torch.utils.data.DataLoader(data, batch_size=2))
        assert [int(i) for (b,) in shard for i in b] == list(range(rank, 5, 2))  # 3 and 2 samples, no padding
        rows = np.arange(15, dtype=np.float32).reshape(5, 3)
        assert np.array_equal(distributed.gather_rows(rows[rank::2]), rows)
        assert distributed.gather_items([f"s{i}" for i in range(rank, 5, 2)]) == [f"s{i}" for i in range(5)]
        assert distributed.sum_all(1.0, rank) == (2.0, 1.0)
        assert distributed.all_true(True) and not distributed.all_true(rank == 0)
        assert distributed.broadcast(f"from {rank}") == "from 0"
        # each rank's share of global batch k, together, is batch k of the one-process permutation
        items = torch.utils.data.TensorDataset(torch.arange(12))
        train = distributed.train_loader(torch.utils.data.DataLoader(items, batch_size=4), seed=7)
        one = torch.utils.data.DistributedSampler(items, num_replicas=1, rank=0, shuffle=True, seed=7)
        for epoch in (0, 1):
            distributed.set_epoch(train, epoch)
            one.set_epoch(epoch)
            mine = [sorted(int(i) for i in b) for (b,) in train]
            assert [len(b) for b in mine] == [2, 2, 2]
            both = distributed.gather_items([mine])
            whole = list(one)
            assert [sorted(both[0][k] + both[1][k]) for k in range(3)] == [sorted(whole[4 * k:4 * k + 4])
                                                                          for k in range(3)]
        with pytest.raises(ConfigError, match="global batch"):
            distributed.train_loader(torch.utils.data.DataLoader(items, batch_size=5), seed=7)
    assert not torch.distributed.is_initialized()  # the session destroyed its process group
    assert not distributed.current().active


def test_distributed_helpers_on_two_gloo_ranks() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_helpers_on_rank, args=(port,), nprocs=2)


def test_one_process_is_untouched() -> None:
    """Without torchrun's environment nothing joins a group: the helpers pass values through."""
    assert not distributed.launched() or os.environ.get("WORLD_SIZE") == "1"
    with distributed.session() as ctx:
        assert (ctx.world, ctx.active, ctx.device.type) == (1, False, "cpu")
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(5)), batch_size=2)
        assert distributed.eval_loader(loader) is loader
        assert distributed.sum_all(3.0) == (3.0,)
    assert not torch.distributed.is_initialized()
