"""Text tokenizers and OpenVLA's prompt.

Nothing can be downloaded, so the tiny/small presets use a self-contained byte-level tokenizer:
4 special tokens, the 256 byte symbols (every instruction is representable, no training corpus
needed), then 256 reserved ids at the top of the vocabulary for the action bins (OpenVLA likewise
uses the last 256 ids). A real OpenVLA checkpoint brings its own tokenizer files.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lamp_bench.models.lamp.config import BYTE_VOCAB, LLMConfig

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3 (Llama's unk/bos/eos order)
N_ACTION_IDS = 256


def prompt(instruction: str) -> str:
    """OpenVLA's prompt (its LIBERO evaluation lower-cases the instruction)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([f"<act_{i:03d}>" for i in range(N_ACTION_IDS)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    assert len(fast) == BYTE_VOCAB, len(fast)
    return fast


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a checkpoint folder (local files only, never remote code)."""
    # An empty config: the folder's config.json is lamp-bench's model config, which transformers would
    # misread as a model type; the tokenizer class comes from tokenizer_config.json.
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False,
                                         config=PretrainedConfig())


def prompt_ids(tokenizer: PreTrainedTokenizerBase, llm: LLMConfig, instruction: str) -> list[int]:
    """BOS + prompt token ids, with OpenVLA's trailing-token fix where the config asks for it."""
    ids = tokenizer(prompt(instruction), add_special_tokens=True)["input_ids"]
    if ids[0] != llm.bos_token_id:
        ids = [llm.bos_token_id] + ids
    if llm.prompt_suffix_id is not None and ids[-1] != llm.prompt_suffix_id:
        ids.append(llm.prompt_suffix_id)
    return ids


def instruction_ids(tokenizer: PreTrainedTokenizerBase, instruction: str) -> list[int]:
    """The instruction alone (what the motion expert is conditioned on)."""
    return tokenizer(instruction.lower(), add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id or 0]
