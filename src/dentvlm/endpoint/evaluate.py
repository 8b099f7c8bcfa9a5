"""`dentvlm test` against an endpoint: the test split's examples, formatted as for the local model, are
sent to the API `concurrency` at a time, and the answers go through the same metric callbacks and
results writer as the local model's, as one more variant of the results folder.

Lightning runs the loop (`trainer.test`): the datamodule's test batches are the endpoint's answers,
asked ahead of the loop so that requests stay in flight across batch boundaries.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.tasks import Example
from dentvlm.endpoint.cache import ResponseCache
from dentvlm.endpoint.client import Completion, EndpointClient
from dentvlm.endpoint.logprobs import estimated_probabilities
from dentvlm.endpoint.progress import RequestProgress
from dentvlm.endpoint.settings import EndpointSettings
from dentvlm.openai_chat import to_openai_messages
from dentvlm.predictions import Prediction


class Asker:
    """Example -> (answer, prompt text): images at the configured resolution, turns as OpenAI messages.

    At the stored resolution, a PNG holds exactly the pixels training decodes from the shards, and a
    JPEG is the shard's own stored JPEG, sent verbatim (`Example.image_bytes`): never encoded a second
    time, so `dentvlm serve`, which keeps such a JPEG's coded data, ends with the shard's very pixels.
    """

    def __init__(self, client: EndpointClient, encoder, settings: EndpointSettings):
        self.client, self.encoder, self.settings = client, encoder, settings
        # Hugging Face fast tokenizers are not safe to share between threads ("Already borrowed").
        self.tokenizer_lock = threading.Lock()

    def __call__(self, example: Example) -> tuple[Completion, str]:
        question = example.messages[:-1]  # the last turn is the reference answer
        with self.tokenizer_lock:
            images = self.encoder.sized(example)[0] if self.settings.resolution == "model" else self.stored(example)
            prompt = self.prompt_text(question)
        messages = to_openai_messages(question, images, self.settings.image_format, self.settings.jpeg_quality)
        return self.client.complete(messages), prompt

    def stored(self, example: Example) -> list:
        """The example's images as stored: its shard JPEGs' bytes when JPEG is asked for and they are
        known (no decode-time resize), else the decoded images."""
        if self.settings.image_format == "jpeg" and example.image_bytes is not None:
            return list(example.image_bytes)
        return example.images

    def prompt_text(self, turns: list[dict]) -> str:
        """The prompt as the local model's results show it (its tokens decoded, special tokens dropped)."""
        processor = self.encoder.processor
        text = processor.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return processor.tokenizer.decode(processor.tokenizer(text)["input_ids"], skip_special_tokens=True)


class EndpointAnswers:
    """Batches of (example, answer, prompt) for one evaluation task, asking `concurrency` requests ahead.

    Padding rows (which only even out batch counts across ranks) are never sent.
    """

    def __init__(self, loader, asker: Asker, concurrency: int, batch_size: int, total: int, label: str,
                 for_probabilities: bool = False):
        self.loader, self.asker, self.concurrency = loader, asker, concurrency
        self.batch_size, self.total, self.label = batch_size, total, label
        self.for_probabilities = for_probabilities  # worth asking only while the server gives log-probabilities

    def __len__(self) -> int:
        return math.ceil(self.total / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple]]:
        batch: list[tuple] = []
        for item in self._answers():
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _answers(self) -> Iterator[tuple]:
        if self.for_probabilities and not self.asker.client.logprobs:
            return  # the test split's requests found the server without log-probabilities: nothing to gain
        progress = RequestProgress(self.total, self.label)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint")
        window: deque = deque()
        try:
            for example in (e for batch in self.loader for e in batch if not e.is_padding):
                window.append((example, pool.submit(self.asker, example)))
                # A window twice the concurrency keeps every worker busy while the oldest answer is awaited.
                while len(window) >= 2 * self.concurrency:
                    yield self._next(window, progress)
            while window:
                yield self._next(window, progress)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # an error stops the run now, not after the queue
            progress.close()

    @staticmethod
    def _next(window: deque, progress: RequestProgress) -> tuple:
        example, future = window.popleft()
        completion, prompt = future.result()
        progress.update(completion.cached)
        return example, completion, prompt


class EndpointDataModule(DentDataModule):
    """`DentDataModule` whose test batches are an endpoint's answers (see `endpoint_datamodule`)."""

    asker: Asker | None = None
    concurrency: int = 1

    def test_dataloader(self) -> list[EndpointAnswers]:
        """The test split's answers per task, and (with log-probabilities asked for) the threshold split's
        classification answers, whose estimated probabilities choose the operating thresholds."""
        encoder, self.encoder = self.encoder, None  # formatted examples, not the local model's tensors
        try:
            loaders = super().test_dataloader()
        finally:
            self.encoder = encoder
        hp, name = self.hparams, self.asker.settings.name
        batch_size = hp.eval_batch_size or hp.batch_size
        parts = [(task, hp.test_split, task) for task in self.eval_tasks]
        if self.threshold_checkups():
            parts.append(("classification", hp.threshold_split, f"{hp.threshold_split} classification"))
        return [EndpointAnswers(loader, self.asker, self.concurrency, batch_size, self.split_size(split, task),
                                f"{name} {label}", for_probabilities=split != hp.test_split)
                for loader, (task, split, label) in zip(loaders, parts)]

    def threshold_checkups(self) -> int:
        """Threshold checkups are asked only when their answers can give probabilities."""
        return super().threshold_checkups() if self.asker.client.logprobs else 0


def endpoint_datamodule(source: DentDataModule, asker: Asker) -> EndpointDataModule:
    """The same shards, split, tasks and settings as `source` (set up), answered by `asker`."""
    accepted = inspect.signature(DentDataModule.__init__).parameters  # hparams also hold LightningCLI's own
    data = EndpointDataModule(**{k: v for k, v in source.hparams.items() if k in accepted})
    data.encoder, data.asker = source.encoder, asker
    data.concurrency, data.few_shot = asker.settings.concurrency, asker.settings.few_shot
    return data


class EndpointModel(L.LightningModule):
    """Turns the endpoint's answers into `Prediction`s for the metric callbacks and the results writer."""

    def __init__(self, client: EndpointClient, classes: tuple[str, ...], multi_label: bool):
        super().__init__()
        self.client, self.classes, self.multi_label = client, classes, multi_label
        self.variant = client.settings.name  # its name in the results, the logs and W&B
        self.started = time.monotonic()

    def on_test_start(self) -> None:
        self.started = time.monotonic()

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch  # examples and answers, no tensors

    def test_step(self, batch: list[tuple], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return {"predictions": [
            Prediction(key=e.key, task=e.task, prompt=prompt, reference=e.target, generated=c.text.strip(),
                       true_labels=list(e.labels), thumbnail=e.thumbnail, split=e.role, groups=e.groups,
                       class_probabilities=self._probabilities(e.task, c))
            for e, c, prompt in batch]}

    def _probabilities(self, task: str, completion: Completion) -> dict[str, float] | None:
        if task != "classification" or not completion.tokens:
            return None  # no log-probabilities from this server: "not available", never zeros
        return estimated_probabilities(completion.tokens, self.classes, self.multi_label)

    def variant_details(self) -> dict:
        """What the results record about this variant: where it was asked, requests, tokens and cost."""
        settings, usage = self.client.settings, self.client.usage
        seconds = time.monotonic() - self.started
        asked = usage.requests - usage.cached
        details = {
            "class_probabilities": "estimated from the answer tokens' top log-probabilities" if self.client.logprobs
            else "not available: the server gave no log-probabilities",
            "endpoint": self.client.url, "model": settings.model, "temperature": settings.temperature,
            "max_tokens": self.client.max_tokens, "few_shot": settings.few_shot, "resolution": settings.resolution,
            "image_format": settings.image_format, "concurrency": settings.concurrency,
            "requests": usage.requests, "cached": usage.cached, "retries": usage.retries, "refused": usage.refused,
            "refusals": usage.refusals[:10], "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "cached_prompt_tokens": usage.cached_prompt_tokens,
            "cached_completion_tokens": usage.cached_completion_tokens, "seconds": round(seconds, 3),
            "requests_per_second": round(asked / seconds, 3) if asked and seconds > 0 else None,
        }
        if settings.input_price is not None or settings.output_price is not None:
            details["cost"] = round(((settings.input_price or 0) * usage.prompt_tokens
                                     + (settings.output_price or 0) * usage.completion_tokens) / 1e6, 6)
        return details


def evaluate_endpoint(trainer: L.Trainer, datamodule: DentDataModule, writer, settings: EndpointSettings,
                      max_new_tokens: int) -> None:
    """Evaluate `settings`' endpoint on `datamodule`'s test split into `writer`'s results folder."""
    from dentvlm.progress import LineProgress

    datamodule.setup("test")  # the local model's processor: image resolution and prompt text
    if datamodule.encoder is None:
        raise ValueError("endpoint evaluation needs model.model_path: its processor sizes the images and renders "
                         "the prompts")
    folder = Path(settings.cache_dir) if settings.cache_dir else Path(trainer.default_root_dir) / "endpoint_cache"
    client = EndpointClient(settings, ResponseCache(folder), settings.max_tokens or max_new_tokens)
    data = endpoint_datamodule(datamodule, Asker(client, datamodule.encoder, settings))
    # The request progress (with its ETA) replaces Lightning's batch progress for this run.
    lines = [c for c in trainer.callbacks if isinstance(c, LineProgress)]
    modes = [c.mode for c in lines]
    for callback in lines:
        callback.mode = "bar"
    if trainer.progress_bar_callback is not None:
        trainer.progress_bar_callback.disable()
    try:
        trainer.test(EndpointModel(client, datamodule.classes, datamodule.hparams.multi_label), datamodule=data,
                     verbose=False)
    finally:
        for callback, mode in zip(lines, modes):
            callback.mode = mode
    usage = client.usage
    print(f"dentvlm test: {settings.name}: {usage.requests} requests ({usage.cached} cached, {usage.retries} retries, "
          f"{usage.refused} refused), {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens "
          f"asked; results in {writer.out_dir}")
