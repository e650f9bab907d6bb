"""Continuous batching: one model thread advances every running completion at each step.

Requests join a bounded queue. At each step the scheduler (its own thread, the only one
that runs the model) admits waiting sequences into free slots of a `SlotCache`, feeds one
chunk of one new prompt (so a long prompt never stalls the others for more than a chunk),
then runs one batched forward of every decoding sequence's last token, and samples each row
with that request's own settings and torch.Generator. A sequence that ends (length, a stop
string, an end-of-text id) or whose client went away leaves at once and frees its slot.
The event loop gets each sequence's new text through its own asyncio queue.

Sampling, stop strings and the context shift at the end of the model's window follow
`LoadedRun.stream` (hone.models.generate._next_ids), so that a request sent alone gets the
text `hone sample` writes for the same seed (the batched forward's sums may differ from a
lone one's in the last bits; `batch_invariant` runs every step at one fixed shape, so that a
row's arithmetic never depends on the others and a crowded request's text is bit for bit its
lone text).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from hone.engine.completion import Completion, first_stop, shown_length
from hone.errors import ConfigError
from hone.models.generate import sampling_probs
from hone.models.slot_cache import SlotCache

if TYPE_CHECKING:
    from hone.engine.inference import LoadedRun
    from hone.serve.metrics import ServerMetrics

log = logging.getLogger("hone.serve")

# Prompt tokens fed per step: one chunk of one prompt per decoding step.
PREFILL_CHUNK = 64


class QueueFull(Exception):
    """The scheduler's queue holds its limit of waiting requests."""


@dataclass
class SchedulerConfig:
    """How many sequences run at once and how they are computed."""

    kv_cache_mb: float = 0  # memory for the slots' keys and values; 0: from the model's size
    max_seqs: int = 64  # sequences decoded together at most
    max_queue: int = 256  # requests waiting for a slot; more are refused (QueueFull)
    batch_invariant: bool = False  # every step at one shape: a text never depends on others
    prefill_chunk: int = PREFILL_CHUNK


@dataclass
class Sequence:
    """One request's completion as the scheduler advances it."""

    ids: list[int]  # the prompt, then every token drawn
    prompt_tokens: int
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator
    stop: list[str]
    out: asyncio.Queue[str | BaseException | None]
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.perf_counter)
    slot: int | None = None
    pending: list[int] = field(default_factory=list)  # tokens to feed the model next
    tokens: list[int] = field(default_factory=list)  # generated
    text: str = ""
    shown: int = 0  # characters of text already sent
    finish_reason: Literal["stop", "length"] = "length"
    completion: Completion | None = None
    cancelled: bool = False
    streamed: bool = True  # False: the text is handed over once, whole, at the end
    first_token_at: float = 0.0
    last_token_at: float = 0.0


class Scheduler:
    """The model thread of a language model's server: `submit` a request, read its pieces
    from `Sequence.out`, `cancel` it when its client goes away."""

    def __init__(
        self, loaded: LoadedRun, config: SchedulerConfig, metrics: ServerMetrics | None = None
    ) -> None:
        assert loaded.tokenizer is not None
        self.loaded, self.config, self.metrics = loaded, config, metrics
        self.model: Any = loaded.model  # a GPT or a Llama: block_size, blocks
        self.tokenizer = loaded.tokenizer
        self.eos_ids = set(getattr(self.tokenizer, "eos_ids", ()))
        self.device = loaded.device
        # The model's window (where the context shifts) and its layers.
        self.max_length, self.num_layers = _window_and_layers(self.model)
        self.bytes_per_token = self._bytes_per_token()
        budget = config.kv_cache_mb * 2**20 or default_kv_cache_bytes(self.model)
        per_slot = self.bytes_per_token * self.max_length
        self.num_slots = min(config.max_seqs, int(budget // per_slot))
        if self.num_slots < 1:
            need = per_slot / 2**20
            raise ConfigError(
                f"--kv-cache-mb {budget / 2**20:g} holds no sequence of {self.max_length} "
                f"tokens; set --kv-cache-mb to at least {need:.1f}"
            )
        self.cache = SlotCache(self.num_layers, self.num_slots, self.max_length)
        if metrics is not None:
            metrics.kv_cache_capacity.set(self.num_slots * per_slot)
        self.free = list(range(self.num_slots))
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.wake = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="hone-scheduler", daemon=True)

    @staticmethod
    def supports(loaded: LoadedRun) -> bool:
        """Whether the model decodes through a cache (hone's GPT and Llama do; an ONNX graph
        does not, and is served one completion at a time)."""
        return hasattr(loaded.model, "new_kv_cache") and hasattr(loaded.model, "blocks")

    def _bytes_per_token(self) -> int:
        """One token's keys and values over all layers, measured by one forward (dtype,
        heads per layer and autocast are the model's own)."""
        probe = SlotCache(self.num_layers, 1, 1)
        probe.select([0], 1, self.device)
        with torch.no_grad(), self.loaded.precision.autocast():
            self.model(torch.zeros(1, 1, dtype=torch.long, device=self.device), cache=probe)
        return probe.bytes_per_token()

    # ---------------------------------------------------------------- event loop side
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout=10)

    def submit(
        self,
        prompt: str | list[int],
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        seed: int,
        stop: list[str],
        streamed: bool = True,
    ) -> Sequence:
        """Queue a completion (checked as `LoadedRun.stream` checks it: a ConfigError for a
        prompt of no tokens); QueueFull when `max_queue` requests wait already."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ConfigError("--prompt encodes to no tokens; give at least one character")
        if "" in stop:
            raise ConfigError(f"stop strings must not be empty, got {stop}")
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        loop = asyncio.get_running_loop()
        seq = Sequence(
            ids, len(ids), max_new_tokens, temperature, top_k, top_p, g, stop,
            asyncio.Queue(), loop, streamed=streamed,
        )  # fmt: skip
        with self.wake:
            if len(self.waiting) >= self.config.max_queue:
                raise QueueFull
            self.waiting.append(seq)
            self.wake.notify()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Stop generating for `seq` (its client went away); its slot frees at the next step."""
        with self.wake:
            seq.cancelled = True
            self.wake.notify()

    def queue_depth(self) -> int:
        return len(self.waiting)

    # ---------------------------------------------------------------- model thread
    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.stopping and not self.waiting and not self.running:
                    if self.metrics is not None:  # idle: nothing is being generated
                        self.metrics.generation_throughput.set(0)
                    self.wake.wait()
                if self.stopping:
                    return
                self._admit()
            try:
                with torch.no_grad():
                    self._step()
            except Exception as e:  # every running request gets the error, the server goes on
                log.exception("hone serve: a generation step failed")
                self._send([(seq, [e]) for seq in self.running])
                for seq in self.running:
                    self._free(seq)
                self.running = []

    def _admit(self) -> None:
        """Move waiting sequences into free slots; drop cancelled ones (lock held)."""
        for seq in [s for s in self.running if s.cancelled]:
            self._free(seq)
        self.running = [s for s in self.running if not s.cancelled]
        while self.waiting and self.free:
            seq = self.waiting.popleft()
            if seq.cancelled:
                continue
            self.free.sort()  # the lowest slots first: running rows stay a short range
            seq.slot = self.free.pop(0)
            self.cache.lengths[seq.slot] = 0
            # A prompt longer than the window keeps its last window (as _next_ids does).
            seq.pending = seq.ids[-self.max_length :]
            self.running.append(seq)
        if self.metrics is not None:
            self._observe()

    def _observe(self) -> None:
        assert self.metrics is not None
        held = sum(self.cache.lengths[s.slot] for s in self.running if s.slot is not None)
        self.metrics.observe_scheduler(
            len(self.waiting), len(self.running), self.num_slots, held * self.bytes_per_token
        )

    def _free(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.free.append(seq.slot)
            seq.slot = None

    def _step(self) -> None:
        """One token of every decoder, then up to `prefill_chunk` tokens of new prompts."""
        updates: list[tuple[Sequence, list[str | BaseException | None]]] = []
        ready: list[Sequence] = []  # rows whose next token is drawn this step
        logits: list[torch.Tensor] = []
        # Decoders first: in the batch-invariant mode a prompt going in has room after its
        # tokens for the throw-away token of the fixed-shape step (see _fixed_shape_decode).
        decoding = [s for s in self.running if len(s.pending) == 1]
        if decoding:
            logits.append(self._forward(decoding, [s.pending[0] for s in decoding], 1))
            ready += decoding
        # Prompts feed a chunk each, the oldest first, within one chunk of tokens per step;
        # those feeding as many tokens run in one forward (the batch-invariant mode: alone).
        budget, groups = self.config.prefill_chunk, collections.defaultdict(list)
        for seq in self.running:
            if len(seq.pending) > 1 and budget > 0:
                n = min(len(seq.pending), self.config.prefill_chunk)
                groups[(n, id(seq)) if self.config.batch_invariant else (n, 0)].append(seq)
                budget -= n
        for (n, _), group in groups.items():
            feed = [t for s in group for t in s.pending[:n]]
            for seq in group:
                seq.pending = seq.pending[n:]
            out = self._forward(group, feed, n)
            ended = [i for i, s in enumerate(group) if not s.pending]  # the prompt is in
            ready += [group[i] for i in ended]
            logits += [out[ended]] if ended else []
        if ready:
            tokens = self._sample(ready, torch.cat(logits))
            updates = [(s, self._advance(s, t)) for s, t in zip(ready, tokens, strict=True)]
        done = [s for s, items in updates if items and items[-1] is None]
        if done:
            with self.wake:
                for seq in done:
                    self._free(seq)
                self.running = [s for s in self.running if s.completion is None]
        self._send(updates)
        if self.metrics is not None:
            if decoding:
                self.metrics.observe_step(len(decoding))
            self._observe()

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Each row's next token from its logits (R, V), as sample_next draws it: greedy rows
        by one argmax, the others with their request's own generator, rows of the same
        temperature, top-k and top-p cut in one batch (the cut is row by row)."""
        tokens = [0] * len(seqs)
        groups = collections.defaultdict(list)
        for i, s in enumerate(seqs):
            groups[(s.temperature, s.top_k, s.top_p)].append(i)
        for (temperature, top_k, top_p), rows in groups.items():
            index = torch.tensor(rows, device=logits.device)
            if temperature == 0:
                for i, t in zip(rows, logits[index].argmax(dim=-1).tolist(), strict=True):
                    tokens[i] = t
                continue
            probs = sampling_probs(logits[index], temperature, top_k, top_p)
            # torch.multinomial draws one sample as argmax(p / q), q ~ Exp(1) from the
            # generator (its fast path, and the same draws: tests/serve/test_continuous.py);
            # spelled out, the noise is drawn row by row and the rest runs once for the group.
            noise = torch.empty_like(probs)
            for j, i in enumerate(rows):
                noise[j].exponential_(1, generator=seqs[i].generator)
            for i, t in zip(rows, (probs / noise).argmax(dim=-1).tolist(), strict=True):
                tokens[i] = t
        return tokens

    def _forward(self, seqs: list[Sequence], tokens: list[int], num_tokens: int) -> torch.Tensor:
        """Logits (R, V) of each row's last new token: `tokens` holds num_tokens per row."""
        rows = [s.slot for s in seqs]
        assert all(r is not None for r in rows)
        slots: list[int] = rows  # type: ignore[assignment]
        exact = self.config.batch_invariant
        if num_tokens == 1:
            return self._decode(slots, tokens)
        idx = torch.tensor(tokens, device=self.device).view(len(slots), num_tokens)
        self.cache.select(slots, num_tokens, self.device, self.max_length if exact else 0)
        return self._model(idx)

    def _decode(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """One token of each decoding slot, as one forward of a consecutive range of slots
        (a view of the cache, not a copy): lowest-first allocation keeps the running ones
        together. The batch-invariant mode runs every slot with keys padded to the whole
        window: one shape at every step. A slot in the range that is not decoding (free, or
        its prompt still going in) runs a token of its own at its next position, which its
        own next write overwrites; its length is kept."""
        exact = self.config.batch_invariant
        low, high = (0, self.num_slots) if exact else (min(slots), max(slots) + 1)
        order = {slot: i for i, slot in enumerate(slots)}
        kept = self.cache.lengths[low:high]
        held = {s.slot for s in self.running}
        for i in range(low, high):
            if i not in held:
                self.cache.lengths[i] = 0
        full = [tokens[order[i]] if i in order else 0 for i in range(low, high)]
        self.cache.select(list(range(low, high)), 1, self.device, self.max_length * exact)
        logits = self._model(torch.tensor(full, device=self.device).view(high - low, 1))
        for i in range(low, high):
            if i not in order:
                self.cache.lengths[i] = kept[i - low]
        if high - low == len(slots) and slots == list(range(low, high)):
            return logits
        return logits[torch.tensor([s - low for s in slots], device=self.device)]

    def _model(self, idx: torch.Tensor) -> torch.Tensor:
        with self.loaded.precision.autocast():
            return self.model(idx, cache=self.cache)[:, -1].float()  # (R, V)

    def _advance(self, seq: Sequence, token: int) -> list[str | BaseException | None]:
        """Add seq's next token: the pieces of text it makes final, then None if the sequence
        has ended. Sets seq.pending to what the next step feeds."""
        now = time.perf_counter()
        if not seq.tokens:
            seq.first_token_at = now
            if self.metrics is not None:
                self.metrics.time_to_first_token.observe(now - seq.arrived)
        elif self.metrics is not None:
            self.metrics.inter_token_latency.observe(now - seq.last_token_at)
        seq.last_token_at = now
        seq.tokens.append(token)
        seq.ids.append(token)
        out: list[str | BaseException | None] = []
        ended = len(seq.tokens) >= seq.max_new_tokens
        if token in self.eos_ids:  # counted as generated; its text not shown
            seq.finish_reason, ended = "stop", True
        else:
            seq.text = self.tokenizer.decode(seq.tokens)
            cut = first_stop(seq.text, seq.stop)
            if cut is not None:
                seq.text, seq.finish_reason, ended = seq.text[:cut], "stop", True
            else:
                end = shown_length(seq.text, seq.stop)
                if end > seq.shown:
                    out.append(seq.text[seq.shown : end])
                    seq.shown = end
        if ended:
            if len(seq.text) > seq.shown:
                out.append(seq.text[seq.shown :])
            seq.completion = Completion(
                seq.text, seq.finish_reason, seq.prompt_tokens, len(seq.tokens)
            )
            out.append(None)
            return out
        assert seq.slot is not None
        if self.cache.lengths[seq.slot] + 1 > self.max_length:
            # The window is full: run its last half again as a fresh prompt (_next_ids).
            self.cache.lengths[seq.slot] = 0
            seq.pending = seq.ids[-max(1, self.max_length // 2) :]
        else:
            seq.pending = [token]
        return out

    def _send(self, updates: list[tuple[Sequence, list[str | BaseException | None]]]) -> None:
        """Hand the new pieces to the event loop: one hop per step for all sequences. A
        sequence not streamed gets its text once, whole, at its end."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Sequence, list[Any]]]] = {}
        for seq, items in updates:
            if not items:
                continue
            if not seq.streamed and not isinstance(items[-1], BaseException):
                if items[-1] is not None:  # pieces of a whole answer: sent at its end
                    continue
                items = [seq.text, None]
            by_loop.setdefault(seq.loop, []).append((seq, items))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # the event loop has closed: no one is waiting
                for seq, _ in batch:
                    seq.cancelled = True


def _window_and_layers(model: Any) -> tuple[int, int]:
    return int(model.block_size), len(model.blocks)


def _put_all(batch: list[tuple[Sequence, list[Any]]]) -> None:
    for seq, items in batch:
        for item in items:
            seq.out.put_nowait(item)


def default_kv_cache_bytes(model: torch.nn.Module) -> int:
    """The slots' memory when --kv-cache-mb is not given: as much as the weights take, and
    at least 64 MiB (a small model's slots are cheap; a large one's weights bound the box)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(weights, 64 * 2**20)
