"""The jit benchmark: PyTorch eager, torch.compile, jaxnets' jit step and jaxnets' whole-loop scan.

Run ``python -m parity.bench`` (``--help`` for options). Each framework runs in
its own process (torch and XLA in one process fight over the cores: torch's
times grow tenfold), with the same thread count; every timing is a median of
several repeats after a warm-up, synchronised with ``block_until_ready`` (JAX)
or the step's own ``.item()``-free completion (torch eager is synchronous on
the CPU). Compile time and the number of compilations are reported apart from
step time, FLOPs per step come from XLA's cost analysis, and the machine's
fp32 GEMM peak is measured in the same run so each row shows its fraction of
the hardware limit.

The data-parallel section (``--devices``, default ``1,2,4``) times LeNet's
train step on ``jaxnets.Trainer(..., mesh=jaxnets.distributed.mesh(n))`` with
the global batch (256; 64 with ``--quick``) split over n devices, one JAX
process per n. On a CPU the n devices are simulated
(``XLA_FLAGS=--xla_force_host_platform_device_count=n``) and share the same
cores and ``--threads`` threads (:func:`parity.bench.common.threads_per_device`),
so those rows show the code path and its correctness (every n reports the same
losses from the same start), not a speed-up; on an accelerator the counts
beyond the visible devices are skipped with a note.
"""
