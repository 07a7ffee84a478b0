"""Throughput of a training run: samples/s, real tokens/s, padding, data wait, memory, MFU.

MFU (model FLOP utilisation) counts the LLM's training FLOPs per real token as
``6 N + 12 L d T`` (Kaplan et al. 2020 / PaLM, Chowdhery et al. 2022, appendix B):
``N`` non-embedding LLM parameters (forward 2N + backward 4N per token), ``L`` layers, ``d``
hidden width and ``T`` the mean sequence length (the attention score and value products). The
frozen encoders and the adapters are not counted, so MFU is a lower bound on what the hardware
does. It is reported against ``peak_tflops`` per device (e.g. 989 for an H100 SXM in bf16 dense);
without it (the CPU default) ``perf/mfu`` is left out.
"""

from __future__ import annotations

import logging
import resource
import sys
import time

import lightning as L
import torch

log = logging.getLogger(__name__)


def llm_flops_per_token(llm: torch.nn.Module, seq_len: float) -> float:
    """``6 N + 12 L d T`` for a Hugging Face causal LM (see the module docstring)."""
    embeddings = {id(p) for m in (llm.get_input_embeddings(), llm.get_output_embeddings()) if m
                  for p in m.parameters()}  # fmt: skip
    n = sum(p.numel() for p in llm.parameters() if id(p) not in embeddings)
    config = llm.config
    layers = getattr(config, "num_hidden_layers", 0)
    width = getattr(config, "hidden_size", 0)
    return 6.0 * n + 12.0 * layers * width * seq_len


def peak_memory_gb() -> float:
    """Peak GPU memory allocated by this process, else its peak resident memory (GB)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9


class Throughput(L.Callback):
    """Measure every training step; log ``perf/*`` every ``log_every_n_steps`` and at the end.

    - ``perf/samples_per_s``, ``perf/tokens_per_s``: per rank and summed over ranks
      (``world_size`` times the per-rank rate, ranks step together); tokens are the LLM's real
      tokens (``attention_mask`` ones: text plus media embeddings), padding excluded;
    - ``perf/padding_share``: padded positions / all positions of the batches;
    - ``perf/data_wait_share``: time between one step's end and the next step's start (the
      DataLoader's wait) / wall time of the measured steps;
    - ``perf/peak_mem_gb``; ``perf/mfu`` when ``peak_tflops`` is set.

    The first ``warmup_steps`` steps (compilation, cache warm-up) are not measured.

    Args:
        peak_tflops: the device's peak dense TFLOP/s in the training dtype, or None.
        warmup_steps: steps left out of the measurement.
        log_every_n_steps: how often the running numbers are logged.

    Example:
        >>> trainer = L.Trainer(callbacks=[Throughput(peak_tflops=989.0)])
    """

    def __init__(
        self, peak_tflops: float | None = None, warmup_steps: int = 2, log_every_n_steps: int = 50
    ) -> None:
        self.peak_tflops = peak_tflops
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.reset()

    def reset(self) -> None:
        self.steps = self.samples = self.tokens = self.positions = 0
        self.step_s = self.wait_s = 0.0
        self._start: float | None = None
        self._end: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._end = None  # the pause between epochs (validation) is not data wait

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the step's kernels are done before it is timed
        now = time.perf_counter()
        measured = trainer.global_step > self.warmup_steps and self._start is not None
        if measured and batch.get("size"):
            mask = batch["attention_mask"]
            self.steps += 1
            self.samples += int(batch["size"])
            self.tokens += int(mask.sum())
            self.positions += int(mask.numel())
            self.step_s += now - self._start
            if self._end is not None:
                self.wait_s += self._start - self._end
        self._end = now
        if measured and self.steps and self.steps % self.log_every_n_steps == 0:
            pl_module.log_dict(self.metrics(trainer, pl_module), rank_zero_only=True)

    def metrics(self, trainer, pl_module) -> dict[str, float]:
        """The ``perf/*`` numbers so far (empty before the first measured step)."""
        if not self.steps:
            return {}
        wall = self.step_s + self.wait_s
        world = int(getattr(trainer, "world_size", 1) or 1)
        out = {
            "perf/samples_per_s": world * self.samples / wall,
            "perf/tokens_per_s": world * self.tokens / wall,
            "perf/tokens_per_s_per_device": self.tokens / wall,
            "perf/padding_share": 1.0 - self.tokens / max(self.positions, 1),
            "perf/data_wait_share": self.wait_s / wall,
            "perf/peak_mem_gb": peak_memory_gb(),
            "perf/measured_steps": float(self.steps),
        }
        model = getattr(pl_module, "model", None)
        if self.peak_tflops and model is not None and hasattr(model, "llm"):
            mean_len = self.tokens / (self.samples or 1)
            flops = llm_flops_per_token(model.llm, mean_len) * self.tokens / wall
            out["perf/mfu"] = flops / (self.peak_tflops * 1e12)
        return out

    def on_train_end(self, trainer, pl_module) -> None:
        values = self.metrics(trainer, pl_module)
        if values and trainer.is_global_zero:
            log.info("throughput: %s", {k: round(v, 4) for k, v in values.items()})
