"""Endpoint evaluation against `dentvlm serve` with ``--endpoint.resolution stored --endpoint.image_format
jpeg``: the server's request reader hands the model exactly the patches the in-process evaluation encodes
from the shards (the shard's JPEG goes verbatim, and the server keeps its coded data)."""

from types import SimpleNamespace

import torch

from dentvlm.data.collate import ChatEncoder
from dentvlm.data.datamodule import ExampleMaker
from dentvlm.data.shards import iter_shard
from dentvlm.endpoint.client import Completion
from dentvlm.endpoint.evaluate import Asker
from dentvlm.endpoint.settings import EndpointSettings
from dentvlm.model.build import load_processor
from dentvlm.openai_chat import ImageLimits
from dentvlm.serve.api import DentChatRequest
from dentvlm.serve.requests import RequestReader, ServingLimits
from dentvlm.sharding import load_manifest


def test_served_patches_equal_in_process_patches(small_shards, tiny_model_dir):
    processor = load_processor(str(tiny_model_dir))
    encoder = ChatEncoder(processor, 4096, "error", context_len=8192)
    settings = load_manifest(small_shards)["settings"]
    limits = ServingLimits(ImageLimits(long_side=settings["image_long_side"], jpeg_quality=settings["jpeg_quality"]))
    reader = RequestReader(encoder, limits)
    sent = []
    client = SimpleNamespace(complete=lambda messages: sent.append(messages) or Completion("none"))
    asker = Asker(client, encoder, EndpointSettings(base_url="http://127.0.0.1:9/v1", model="m", resolution="stored",
                                                    image_format="jpeg"))
    maker = ExampleMaker("classification", ("caries", "gingivitis"), True, "both", ("photograph", "radiograph"), 8,
                         None, None, False)
    compared = 0
    for shard in sorted(small_shards.glob("test-*.tar")):
        for sample in iter_shard(shard):
            example = maker.example(sample)
            if not example.images:
                continue
            asker(example)
            served, _ = reader.encode(DentChatRequest(messages=sent[-1]))
            local = encoder.encode(example, training=False)
            assert torch.equal(served.image_grid_thw, local.image_grid_thw), sample.where
            assert torch.equal(served.pixel_values, local.pixel_values), sample.where
            compared += 1
    assert compared >= 3
