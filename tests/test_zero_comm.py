"""growth.comm.count_bytes on 2 real gloo processes: every kind of collective is seen, at the
operator (also through captured references and nested helpers), with the documented byte rules."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.distributed]


def worker(out):
    import torch
    import torch.distributed as dist
    import torch.distributed._functional_collectives as fc

    from growth.comm import count_bytes

    dist.init_process_group("gloo")
    rank, t = dist.get_rank(), torch.ones(4)  # 16 bytes
    captured = dist.all_gather_into_tensor  # bound before counting, as DeepSpeed does
    with count_bytes() as c:
        with c.phase("broadcast"):
            dist.broadcast(t, 0)
        with c.phase("all_reduce"):
            dist.all_reduce(t)
        with c.phase("all_gather"):
            captured(torch.empty(8), t)
            dist.all_gather([torch.empty(4), torch.empty(4)], t)
        with c.phase("p2p"):
            dist.send(t, 1) if rank == 0 else dist.recv(t, 0)
        with c.phase("all_to_all"):
            dist.all_to_all_single(torch.empty(4), t)
        with c.phase("functional"):
            fc.wait_tensor(fc.all_gather_tensor(t, 0, dist.group.WORLD))
        with c.phase("local"):
            (t * 2).sum()
            dist.barrier()
    outside = torch.ones(4)
    dist.broadcast(outside, 0)  # after the block: not counted
    json.dump({"phases": c.by_phase(), "sent": c.sent, "received": c.received},
              open(os.path.join(out, f"rank{rank}.json"), "w"))
    dist.destroy_process_group()


def test_count_bytes_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(29300 + os.getpid() % 500), __file__, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.load(open(tmp_path / f"rank{r}.json")) for r in range(2))
    p0, p1 = r0["phases"], r1["phases"]
    assert p0["broadcast"]["sent"] == 16 and p0["broadcast"]["received"] == 0
    assert p1["broadcast"]["sent"] == 0 and p1["broadcast"]["received"] == 16
    assert p0["all_reduce"]["sent"] == p1["all_reduce"]["received"] == 16  # 2 n (W-1) / W
    assert p0["all_gather"] == p1["all_gather"] == {"sent": 32, "received": 32, "calls": 2}
    assert (p0["p2p"]["sent"], p0["p2p"]["received"], p1["p2p"]["sent"], p1["p2p"]["received"]) == (16, 0, 0, 16)
    assert p0["all_to_all"]["sent"] == p0["all_to_all"]["received"] == 8  # half of the tensor goes to the other rank
    assert p0["functional"]["received"] == 16
    assert p0["local"]["sent"] == p0["local"]["received"] == 0
    assert r0["sent"] == 16 + 16 + 32 + 16 + 8 + 16 and r1["received"] == r0["sent"]


if __name__ == "__main__":
    worker(sys.argv[1])
