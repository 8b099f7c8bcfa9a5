"""Encoding with the real tiny Qwen2.5-VL processor: label masks on exact token positions, image token
counts, truncation that never cuts an image block, right/left padding."""

import pytest
import torch
from PIL import Image

from dentvlm.data.collate import IGNORE_INDEX, ChatEncoder, Overlong, pad_batch
from dentvlm.data.tasks import format_checkup
from dentvlm.labels import DEFAULT_CLASSES
from dentvlm.model.build import load_processor
from dentvlm.records import Checkup


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(str(tiny_model_dir))


def example(images=2, task="classification", labels=("caries",), info="pain on 36"):
    checkup = Checkup(key="k", patient="p", modalities=["photograph"] * images, labels=list(labels),
                      info={"chief_complaint": info}, report={"diagnosis": "Caries of 36"})
    pictures = [Image.new("RGB", (112, 84), (200, 10 * i, 10)) for i in range(images)]
    return format_checkup(checkup, pictures, task, DEFAULT_CLASSES)


def test_labels_cover_exactly_the_answer_and_its_end_token(processor):
    encoded = ChatEncoder(processor).encode(example())
    tokenizer = processor.tokenizer
    ids = encoded.input_ids.tolist()
    answer = tokenizer.encode("caries", add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    start = encoded.prompt_len
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert ids[start - len(header) : start] == header
    assert ids[start : start + len(answer)] == answer
    expected = [IGNORE_INDEX] * start + answer + [IGNORE_INDEX] * (len(ids) - start - len(answer))
    assert encoded.label_ids.tolist() == expected
    assert tokenizer.decode(ids[start:]) == "caries<|im_end|>\n"


def test_image_tokens_match_image_features(processor):
    encoded = ChatEncoder(processor).encode(example(images=3))
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    tokens = int((encoded.input_ids == image_token).sum())
    merge = processor.image_processor.merge_size
    assert tokens == encoded.pixel_values.shape[0] // merge**2 == int(encoded.image_grid_thw.prod(-1).sum()) // merge**2
    assert encoded.mm_token_type_ids.sum() == tokens
    assert encoded.image_grid_thw.shape == (3, 3)


def test_max_pixels_bounds_image_tokens(processor):
    small = ChatEncoder(processor, max_pixels=56 * 56, min_pixels=28 * 28).encode(example(images=1))
    assert int(small.image_grid_thw.prod()) // 4 <= 4


def test_truncation_keeps_image_blocks_whole(processor):
    # min_pixels = max_pixels: the budget cannot scale the images, so only the answer can be cut
    fixed = dict(min_pixels=112 * 112, max_pixels=112 * 112)
    full = ChatEncoder(processor, **fixed).encode(example(task="report"))
    cut = ChatEncoder(processor, cutoff_len=full.prompt_len + 2, **fixed).encode(example(task="report"))
    assert len(cut) == full.prompt_len + 2 and (cut.label_ids != IGNORE_INDEX).sum() == 2 and cut.truncated
    assert torch.equal(cut.input_ids, full.input_ids[: full.prompt_len + 2])
    inside_image = int((full.input_ids == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).nonzero()[2])
    strict = ChatEncoder(processor, cutoff_len=inside_image, overflow="error", **fixed)
    with pytest.raises(Overlong, match="split an image block"):
        strict.encode(example(task="report"))
    assert ChatEncoder(processor, cutoff_len=inside_image, overflow="drop", **fixed)(example(task="report")) is None


def test_evaluation_never_cuts_or_drops_a_sample_that_fits_the_context(processor):
    fixed = dict(min_pixels=112 * 112, max_pixels=112 * 112)
    full = ChatEncoder(processor, **fixed).encode(example(task="report"))
    encoder = ChatEncoder(processor, cutoff_len=full.prompt_len - 5, context_len=len(full), **fixed)
    kept = encoder(example(task="report"), training=False)
    assert torch.equal(kept.input_ids, full.input_ids) and not kept.truncated
    assert encoder(example(task="report"), training=True) is None  # training drops it
    tight = ChatEncoder(processor, cutoff_len=full.prompt_len - 5, context_len=len(full) - 1, **fixed)
    with pytest.raises(Overlong, match="context"):
        tight(example(task="report"), training=False)


def test_batches_pad_right_for_loss_and_left_for_generation(processor):
    encoder = ChatEncoder(processor)
    short, long = encoder.encode(example(images=1, info="x")), encoder.encode(example(images=2, info="a b c d e"))
    batch = pad_batch([short, long], encoder.pad_id)
    assert batch["input_ids"].shape[1] == len(long)
    assert batch["attention_mask"][0].tolist() == [1] * len(short) + [0] * (len(long) - len(short))
    assert (batch["labels"][0, len(short):] == IGNORE_INDEX).all()
    width = batch["gen_input_ids"].shape[1]
    assert width == max(short.prompt_len, long.prompt_len)
    prompt = short.input_ids[: short.prompt_len].tolist()
    assert batch["gen_input_ids"][0, width - short.prompt_len :].tolist() == prompt
    assert batch["gen_attention_mask"][0, : width - short.prompt_len].sum() == 0
    assert batch["pixel_values"].shape[0] == short.pixel_values.shape[0] + long.pixel_values.shape[0]
    assert batch["image_grid_thw"].shape == (3, 3)


def test_multi_turn_chat_trains_on_every_answer(processor):
    chat = Checkup(key="k", patient="p", modalities=["photograph"], conversation=[
        {"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "A."},
        {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "B."}])
    encoded = ChatEncoder(processor).encode(format_checkup(chat, [Image.new("RGB", (56, 56))], "chat", DEFAULT_CLASSES))
    learned = processor.tokenizer.decode(encoded.input_ids[encoded.label_ids != IGNORE_INDEX])
    assert learned == "A.<|im_end|>B.<|im_end|>"


def test_uint8_images_normalised_on_the_device_equal_the_processors_own(processor):
    from dentvlm.model.inputs import PixelNormalizer

    encoded = ChatEncoder(processor).encode(example(images=3))
    assert encoded.pixel_values.dtype == torch.uint8  # a quarter of float32's bytes between processes
    pictures = example(images=3).images
    reference = processor.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    normalised = PixelNormalizer(processor.image_processor)(encoded.pixel_values)
    torch.testing.assert_close(normalised, reference, rtol=0, atol=1e-6)
