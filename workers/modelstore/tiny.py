"""Build random-weight Qwen3-VL checkpoints offline, for tests, local development and benchmarks.

Every preset uses the real ``qwen3_vl`` architecture (so optimum-intel exports it and
OpenVINO GenAI runs it exactly as it would the real model) with seeded random weights:

* ``tiny-random``: dimensions small enough that building and exporting take seconds;
* ``qwen3-vl-2b-random``: the published Qwen3-VL-2B-Instruct dimensions, so a benchmark
  does the same work per token as the real model does.

Nothing here touches the network: the tokenizer is trained on a built-in corpus and every
processor file is written by hand (``Qwen3VLProcessor`` itself cannot be instantiated here
because its video processor needs torchvision, which we do not install).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Qwen's special tokens in their real order; the first 14 are "special" (skipped when
# decoding), the rest are ordinary added tokens, as in the Qwen3-VL tokenizer.  A preset
# decides at which id they start (see _Preset.first_special_id).
_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
_QWEN_TOKENS = _SPECIAL_TOKENS + _ADDED_TOKENS

# Qwen2/Qwen3 pre-tokenizer split pattern (copied from the real tokenizer.json).
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BPE_VOCAB_SIZE = 1024

# Filler vocabulary that pads a small trained BPE out to a real model's vocabulary size,
# so every id a random model can emit decodes.  Fillers are plain BPE vocabulary entries
# ("Ġt5000" decodes to " t5000") that no input can encode to: the split pattern cuts
# letters from digits, so no pre-token (and so no merge result) mixes them.  Fillers past
# Qwen's tokens must be added tokens instead (the tokenizers library renumbers added
# tokens that sit behind a gap in the BPE vocabulary); like the ids the real tokenizer
# leaves unnamed, they are special, so they decode to nothing when specials are skipped.
_FILLER_PREFIX = "Ġt"
_RESERVED_TOKEN = "<|reserved_{}|>"


@dataclass(frozen=True)
class _Preset:
    """Everything that differs between presets; the build is one code path over these."""

    text: Mapping[str, Any]  # Qwen3VLTextConfig fields except vocab size and token ids
    vision: Mapping[str, Any]  # Qwen3VLVisionConfig fields
    vocab_size: int  # ids the model can emit; the tokenizer is padded to exactly this many
    first_special_id: int  # id of <|endoftext|>, the first of Qwen's tokens
    dtype: str  # torch dtype the weights are created and saved in
    image_pixels: tuple[int, int]  # image processor's (min, max) pixel budget
    video_pixels: tuple[int, int]  # video processor's (min, max) pixel budget per frame group
    video_max_frames: int


_PRESETS: dict[str, _Preset] = {
    "tiny-random": _Preset(
        text={
            # 128 (not smaller) so every projection's input channels divide int4's default
            # group size of 128; with 64, `--weight-format int4` fails in NNCF.
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,  # GQA like the real model
            "head_dim": 32,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_theta": 5000000.0,
            # Interleaved M-RoPE as in Qwen3-VL; sections must sum to head_dim // 2.
            # The real 24:20:20 split scaled down to head_dim 32.
            "rope_scaling": {"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True},
            "attention_bias": False,
            "tie_word_embeddings": True,
        },
        vision={
            "depth": 3,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 128,  # must equal the text hidden size
            "num_position_embeddings": 64,  # an 8x8 learned grid, bilinearly interpolated per image
            # Deepstack features feed the first len(indexes) decoder layers, so with 2 text
            # layers at most 2 indexes; both are below the vision depth.
            "deepstack_visual_indexes": [0, 1],
        },
        # No padding: Qwen's tokens follow the trained BPE directly and end the vocabulary.
        vocab_size=_BPE_VOCAB_SIZE + len(_QWEN_TOKENS),
        first_special_id=_BPE_VOCAB_SIZE,
        dtype="float32",
        # The factor is patch_size * merge_size = 32 px, so 4096 px² is four merged tokens
        # and 65536 px² (256x256) caps an image at 64; small images keep the tiny model fast
        # while still exercising resizing, patching and merging.
        image_pixels=(32 * 32 * 4, 256 * 256),
        video_pixels=(32 * 32 * 4, 256 * 256 * 2),
        video_max_frames=16,
    ),
    # Qwen/Qwen3-VL-2B-Instruct's published config.json, transcribed (transformers' own
    # Qwen3VLConfig defaults describe a larger model, so nothing here is left to defaults
    # except initializer_range 0.02, attention_dropout 0.0 and in_channels 3, which match).
    "qwen3-vl-2b-random": _Preset(
        text={
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "rope_theta": 5000000.0,
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
            "attention_bias": False,
            "tie_word_embeddings": True,
        },
        vision={
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 2048,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [5, 11, 17],
        },
        # The real layout: Qwen's 26 tokens at 151643..151668 after a 151643-token BPE, and
        # the embedding padded to 151936 rows (ids the real tokenizer leaves unnamed).
        vocab_size=151936,
        first_special_id=151643,
        # The real checkpoint's dtype; it also halves build and export memory.
        dtype="bfloat16",
        # The real preprocessor_config.json / video_preprocessor_config.json budgets.
        image_pixels=(65536, 16777216),
        video_pixels=(4096, 25165824),
        video_max_frames=768,
    ),
}

PRESETS: tuple[str, ...] = tuple(_PRESETS)

# The real Qwen3-VL-*-Instruct chat template (tools, system, image/video parts, tool
# responses).  Image content parts expand to <|vision_start|><|image_pad|><|vision_end|>.
_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n"
    "        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n\\n' }}\n"
    "    {%- endif %}\n"
    '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and '
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' }}\n"
    "        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n"
    "        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set image_count = namespace(value=0) %}\n"
    "{%- set video_count = namespace(value=0) %}\n"
    "{%- for message in messages %}\n"
    '    {%- if message.role == "user" %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content_item in message.content %}\n"
    "                {%- if 'text' in content_item %}\n"
    "                    {{- content_item.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and message.content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# A small, fixed training corpus: prose in the domain of the service (describing images,
# answering questions), some JSON and digits so structured-output and number tokens exist.
_CORPUS_PARAGRAPHS: tuple[str, ...] = (
    "The image shows a small red house with a white door next to a tall green tree. "
    "A dog is sitting on the grass in front of the house, and the sky is clear and blue.",
    "Describe the picture in one sentence. The photo contains a cat sleeping on a wooden table "
    "near a window; sunlight falls across the room and the walls are painted yellow.",
    "What is written on the sign? The sign says: Open daily from 9 to 5, closed on Sundays.",
    "There are three people walking along a street in a busy city. Cars are parked on both sides, "
    "and the buildings have many windows. It looks like an afternoon in late autumn.",
    "Answer the question about the image. Question: how many apples are on the plate? "
    "Answer: there are four apples on the plate, two red and two green.",
    "The chart shows sales for each month of the year. January was the lowest month, "
    "and the highest value appears in December with a total of 1250 units.",
    "Extract the fields as JSON. Output only valid JSON that matches the schema.",
    '{"title": "Invoice 2024-117", "total": 349.99, "currency": "EUR", "paid": true, '
    '"items": [{"name": "paper", "quantity": 12}, {"name": "ink", "quantity": 3}]}',
    '{"objects": ["car", "tree", "person", "bicycle"], "count": 4, "scene": "street", "night": false}',
    "A receipt from a grocery store lists bread, milk, eggs, cheese and coffee, with a date "
    "of 12 March and a total amount printed at the bottom of the page.",
    "The diagram explains how water moves through the environment: evaporation from the ocean, "
    "condensation into clouds, precipitation as rain or snow, and collection in rivers and lakes.",
    "You are a helpful assistant. Please read the document carefully and give a short, "
    "accurate answer. If you are not sure, say that you do not know.",
    "In the screenshot a user interface has a search box at the top, a list of results below, "
    "and a blue button labelled Submit in the lower right corner of the window.",
    "The map highlights the northern region in orange and the southern region in purple; "
    "the legend on the left explains what each colour means for the population data.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 100 1000 3.14 2.71 -1 42 99%",
    "The kitchen has a white fridge, a black oven and a wooden shelf with plates, cups, bowls "
    "and glasses. A bunch of bananas and a basket of oranges stand on the counter by the sink.",
    "Please list every visible object, its colour, its position (left, right, centre, top, bottom) "
    "and whether it is partly hidden behind something else in the scene.",
    "The handwritten note reads: remember to buy flowers for mother, call the doctor on Monday "
    "morning, and return the library books before Friday evening.",
    "On the beach children are building a sandcastle while seagulls fly over the waves; "
    "a lighthouse stands on the rocks far away and a small boat is sailing toward the harbour.",
    "The table compares prices of laptops, phones and tablets across five shops. The cheapest "
    "phone costs 199 dollars and the most expensive laptop costs 2499 dollars.",
    "A mountain landscape with snow on the peaks, a frozen lake in the valley and pine forests "
    "covering the slopes. Several hikers with backpacks follow a narrow path toward the summit.",
    "Summarise the slide: the quarterly report shows revenue growth of eight percent, lower "
    "operating costs, and a new product launch planned for the second half of next year.",
    "Identify the animal: it is a brown horse standing in a field with a fence, two cows grazing "
    "behind it, and a red barn with a weather vane on the roof.",
    "Punctuation and symbols: ( ) [ ] { } < > : ; , . ! ? ' \" - _ + = * / \\ | @ # $ & ~",
)


def build_random_checkpoint(out_dir: Path, preset: str = "tiny-random", seed: int = 0) -> Path:
    """Write a complete random-weight Qwen3-VL Hugging Face checkpoint of ``preset`` into ``out_dir``."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = _PRESETS[preset]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer(spec)
    token_ids = {tok: tokenizer.token_to_id(tok) for tok in _QWEN_TOKENS}
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(tokenizer))
    _write_json(out_dir / "special_tokens_map.json", _special_tokens_map())

    _save_random_model(_model_config(spec, token_ids), out_dir, seed, spec.dtype)

    _write_json(out_dir / "generation_config.json", _generation_config(token_ids))
    _write_json(out_dir / "preprocessor_config.json", _image_processor_config(spec))
    _write_json(out_dir / "video_preprocessor_config.json", _video_processor_config(spec))
    # Processors of this family keep the template in chat_template.json as well; writing it
    # keeps the directory identical in shape to a real Qwen3-VL checkpoint.
    _write_json(out_dir / "chat_template.json", {"chat_template": _CHAT_TEMPLATE})
    logger.info("built %s qwen3_vl checkpoint in %s (vocab %d)", preset, out_dir, spec.vocab_size)
    return out_dir




def _build_tokenizer(spec: _Preset) -> Any:
    """Return the trained BPE laid out as ``spec`` asks: fillers, Qwen's tokens at their ids, fillers."""
    from tokenizers import AddedToken

    tokenizer = _train_tokenizer()
    if spec.first_special_id > tokenizer.get_vocab_size():
        tokenizer = _with_filler_vocab(tokenizer, spec.first_special_id)
    # Added after the BPE vocabulary so they get the next ids, as in Qwen.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in _ADDED_TOKENS])
    reserved = range(spec.vocab_size - tokenizer.get_vocab_size())
    if reserved:
        tokenizer.add_special_tokens(
            [AddedToken(_RESERVED_TOKEN.format(i), special=True, normalized=False) for i in reserved]
        )
    # The layout is what makes sampled ids decode and Qwen's ids real; check rather than trust it.
    if tokenizer.token_to_id(_QWEN_TOKENS[0]) != spec.first_special_id or tokenizer.get_vocab_size() != spec.vocab_size:
        raise RuntimeError(
            f"tokenizer layout is off: <|endoftext|> at {tokenizer.token_to_id(_QWEN_TOKENS[0])} "
            f"(want {spec.first_special_id}), {tokenizer.get_vocab_size()} ids (want {spec.vocab_size})"
        )
    return tokenizer


def _train_tokenizer() -> Any:
    """Train a deterministic byte-level BPE shaped like Qwen's tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # Same pipeline as Qwen2/Qwen3: NFC, regex split, then byte-level without its own regex;
    # openvino_tokenizers knows how to convert exactly this shape.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        # All 256 byte symbols up front so any UTF-8 input is encodable (no unknown token).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_CORPUS_PARAGRAPHS, trainer=trainer)
    return tokenizer


def _with_filler_vocab(tokenizer: Any, size: int) -> Any:
    """Return ``tokenizer`` with its BPE vocabulary padded to ``size`` ids by unreachable fillers."""
    from tokenizers import Tokenizer

    # The Python API cannot extend a BPE model's vocabulary, so edit the serialized form.
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("trained BPE vocabulary is not contiguous; fillers would collide")
    for token_id in range(len(vocab), size):
        filler = f"{_FILLER_PREFIX}{token_id}"
        if filler in vocab:  # impossible (see _FILLER_PREFIX), but a duplicate would shift every id
            raise RuntimeError(f"filler token {filler!r} is already a trained token")
        vocab[filler] = token_id
    return Tokenizer.from_str(json.dumps(data))


def _tokenizer_config(tokenizer: Any) -> dict[str, Any]:
    """Return tokenizer_config.json contents matching Qwen3-VL's (eos <|im_end|>, pad <|endoftext|>)."""
    added_tokens_decoder = {
        str(token_id): {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
        for token_id, token in tokenizer.get_added_tokens_decoder().items()
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": list(_SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": _CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 262144,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2TokenizerFast",
        "unk_token": None,
    }


def _special_tokens_map() -> dict[str, Any]:
    """Return special_tokens_map.json contents consistent with tokenizer_config.json."""
    return {
        "additional_special_tokens": list(_SPECIAL_TOKENS[1:]),
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    }


def _model_config(spec: _Preset, token_ids: dict[str, int]) -> Any:
    """Return the preset's Qwen3VLConfig with special-token ids matching the tokenizer."""
    from transformers import Qwen3VLConfig

    text_config = {
        **spec.text,
        "vocab_size": spec.vocab_size,  # exactly the tokenizer size, so every sampled id decodes
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "dtype": spec.dtype,
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=dict(spec.vision),
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=True,
        architectures=["Qwen3VLForConditionalGeneration"],
    )


@contextmanager
def _seeded_torch(seed: int, dtype: Any) -> Iterator[None]:
    """Seed torch's global RNG and set its default dtype, restoring both afterwards."""
    import torch

    # A private generator would not reach transformers' init code, so seed the global one;
    # restoring it (and the dtype) avoids surprising callers.
    rng_state = torch.random.get_rng_state()
    default_dtype = torch.get_default_dtype()
    try:
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        yield
    finally:
        torch.set_default_dtype(default_dtype)
        torch.random.set_rng_state(rng_state)


def _save_random_model(config: Any, out_dir: Path, seed: int, dtype: str) -> None:
    """Instantiate the model with seeded random weights and save config + safetensors."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    # Parameters are created (and initialised) directly in the target dtype, so a bf16
    # model never exists as fp32 too: 2B parameters take 4.3 GB instead of 8.5 + 4.3 GB.
    with _seeded_torch(seed, getattr(torch, dtype)):
        model = Qwen3VLForConditionalGeneration(config).eval()
    # safetensors copies a whole shard into memory while writing it, so smaller shards
    # bound the peak; the tiny model still fits one file.  save_pretrained also writes a
    # derived generation_config.json, which the caller overwrites.
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="2GB")


def _generation_config(token_ids: dict[str, int]) -> dict[str, Any]:
    """Return generation_config.json; greedy by default so tests are deterministic."""
    return {
        "bos_token_id": token_ids["<|endoftext|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        # The real model stops on either <|im_end|> or <|endoftext|>.
        "eos_token_id": [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        "do_sample": False,
        "max_new_tokens": 64,
    }


def _processor_common(spec: _Preset, processor_key: str, processor_type: str) -> dict[str, Any]:
    """The settings Qwen3-VL's image and video processors share: normalisation and the patch grid."""
    return {
        processor_key: processor_type,
        "processor_class": "Qwen3VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "resample": 3,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "patch_size": spec.vision["patch_size"],
        "merge_size": spec.vision["spatial_merge_size"],
        "temporal_patch_size": spec.vision["temporal_patch_size"],
    }


def _image_processor_config(spec: _Preset) -> dict[str, Any]:
    """Return preprocessor_config.json for the Qwen2-VL image processor as Qwen3-VL uses it."""
    min_pixels, max_pixels = spec.image_pixels
    # The slow processor: the "Fast" variant needs torchvision, which is not installed.
    return {
        **_processor_common(spec, "image_processor_type", "Qwen2VLImageProcessor"),
        # Qwen3-VL expresses the pixel budget as size.{shortest,longest}_edge (in pixels²);
        # min_pixels/max_pixels carry the same numbers for readers that look for those
        # (OpenVINO GenAI prefers them and falls back to size.*, so either way it agrees).
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
    }


def _video_processor_config(spec: _Preset) -> dict[str, Any]:
    """Return video_preprocessor_config.json mirroring Qwen3-VL's video processor settings."""
    min_pixels, max_pixels = spec.video_pixels
    return {
        **_processor_common(spec, "video_processor_type", "Qwen3VLVideoProcessor"),
        "do_sample_frames": True,
        "fps": 2,
        "min_frames": 4,
        "max_frames": spec.video_max_frames,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as stable, human-readable JSON (sorted keys make builds byte-identical)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
