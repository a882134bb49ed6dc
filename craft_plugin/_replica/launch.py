"""Run a function in N gloo processes on this machine (multi-process tests and the demo).

``run_distributed(fn, world_size, *args)`` spawns one process per rank, initialises a gloo
process group over a file store, calls ``fn(*args)`` in each and returns the ranks' results in
rank order. An exception in any rank is re-raised in the caller with that rank's traceback; a
rank that does not finish within ``timeout`` seconds fails the call instead of hanging it.
"""
from __future__ import annotations

import gc
import os
import pickle
import tempfile
import time
import traceback
from datetime import timedelta
from typing import Any, Callable, List

import torch.multiprocessing as mp
from torch import distributed


def _rank_main(rank: int, world_size: int, store: str, out_dir: str, fn: Callable, args: tuple) -> None:
    distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                   world_size=world_size, timeout=timedelta(seconds=120))
    try:
        result = ("ok", fn(*args))
    except BaseException:
        result = ("error", traceback.format_exc())
    finally:
        # free what fn left in reference cycles (DDP and its reducer) while the group is alive:
        # collected later, at interpreter exit, it aborted the process ("terminate called
        # without an active exception") in about a third of 2-rank runs
        gc.collect()
        distributed.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as handle:
        pickle.dump(result, handle)


def run_distributed(fn: Callable, world_size: int, *args: Any, timeout: float = 300) -> List[Any]:
    with tempfile.TemporaryDirectory() as out_dir:
        store = os.path.join(out_dir, "store")
        ctx = mp.start_processes(_rank_main, args=(world_size, store, out_dir, fn, args),
                                 nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                for process in ctx.processes:
                    process.kill()
                raise TimeoutError(f"run_distributed: ranks did not finish within {timeout} s")
        results = []
        for rank in range(world_size):
            with open(os.path.join(out_dir, f"rank{rank}.pkl"), "rb") as handle:
                status, value = pickle.load(handle)
            if status == "error":
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            results.append(value)
        return results
