"""A two-"node" launch on this machine: two `torchrun --nnodes 2` agents of one process each (gloo),
as a SLURM or torchrun launch across two machines would start them, with hybrid FSDP2 sharding
(shard within a node, replicate across nodes)."""

import socket
import subprocess
import sys

import pytest
import torch

from .conftest import REPO, fit_args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_node_torchrun_launch_with_hybrid_sharding(tmp_path):
    port = free_port()
    args = fit_args(tmp_path, "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.max_epochs", "1",
                    "--trainer.strategy", "lightning.pytorch.strategies.ModelParallelStrategy",
                    "--trainer.strategy.save_distributed_checkpoint", "false", "--model.fsdp_sharding", "hybrid")
    nodes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                          "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                          "-m", "dentvlm", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "FSDP2 hybrid sharding over a (2, 1) mesh (replicate x shard)" in outputs[0]
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
