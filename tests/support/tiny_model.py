"""Build a tiny, randomly initialised Llama checkpoint with its own tokenizer.

The workers' tests serve this model through ``transformers serve`` and run
it in process. Everything is made locally (no hub, no network): a byte-level
BPE tokenizer trained on a generated corpus, a chat template, and a 2-layer
Llama with random weights from a fixed seed. A checkpoint of a few hundred
kilobytes loads in well under a second, so a test can build one in tmp.

The model has no end-of-sequence token in its generation config, so it
always writes exactly ``max_tokens`` tokens: tests can rely on lengths.

Run as a script to build one into a directory (used by the GPU check to make
a bigger model): ``python -m tests.support.tiny_model OUT [--hidden N --layers N]``.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "TinyModelSpec", "build_tiny_model", "make_model", "make_tokenizer"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_WORD_TEXT = (
    "the a tide gate queue worker lease token batch prompt stream chunk fair share "
    "tenant priority window engine cache memory latency first second reply model "
    "river harbour ship sail wind north south east west morning evening light dark "
    "one two three four five six seven eight nine ten hello world request answer"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """Shape of the generated model; the defaults make a ~0.3 MB checkpoint."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 2048
    seed: int = 1234


def _corpus(seed: int, lines: int = 2000) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) for _ in range(lines)]


def make_tokenizer(spec: TinyModelSpec | None = None) -> Any:
    """A byte-level BPE tokenizer trained on a generated corpus, with a chat template."""
    # Imported here: transformers is heavy and only the tests need it.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = spec or TinyModelSpec()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec.seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(tokenizer: Any, spec: TinyModelSpec | None = None) -> Any:
    """A randomly initialised Llama (seeded) with no end-of-sequence token.

    Built on torch's current default device: under ``with torch.device("cuda")``
    a large one is initialised on the GPU directly.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = spec or TinyModelSpec()
    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=None
    )
    return model


def build_tiny_model(directory: Path, spec: TinyModelSpec | None = None) -> Path:
    """Write tokenizer, config and random weights into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(spec)
    tokenizer.save_pretrained(directory)
    make_model(tokenizer, spec).save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    default = TinyModelSpec()
    parser.add_argument("--hidden", type=int, default=default.hidden_size)
    parser.add_argument("--intermediate", type=int, default=default.intermediate_size)
    parser.add_argument("--layers", type=int, default=default.layers)
    parser.add_argument("--heads", type=int, default=default.heads)
    parser.add_argument("--kv-heads", type=int, default=default.kv_heads)
    args = parser.parse_args(argv)
    spec = TinyModelSpec(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.kv_heads,
    )
    print(build_tiny_model(args.out, spec))


if __name__ == "__main__":
    main()
