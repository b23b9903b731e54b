"""Token ids in and UTF-8 text out, with mistral_common as the single source of truth.

FIM prompts are built from token ids (`encode_fim`), never by pasting control-token strings
into text, so user code containing "[PREFIX]" or "</s>" stays ordinary text. Output is decoded
token by token into bytes and passed through an incremental UTF-8 decoder, so a character split
over several byte-fallback tokens is emitted whole, and a leading SentencePiece space is kept
(the generated middle continues the prefix; it is not the start of a document).
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.protocol.instruct.normalize import get_normalizer
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode, get_validator
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy, TokenizerVersion
from mistral_common.tokens.tokenizers.instruct import InstructTokenizerV3
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistral_common.tokens.tokenizers.sentencepiece import SentencePieceTokenizer
from mistral_common.tokens.tokenizers.tekken import Tekkenizer
from pydantic import ValidationError

from ..errors import InvalidRequestError, ModelLoadError

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
FIM_CONTROL_TOKENS = ("[PREFIX]", "[SUFFIX]")


def find_tokenizer_file(model_dir: Path) -> Path:
    """The tokenizer file of a model directory, in the order Mistral's releases use them."""
    candidates = [model_dir / "tekken.json"]
    candidates += sorted(model_dir.glob("tokenizer.model.v*"), reverse=True)
    candidates.append(model_dir / "tokenizer.model")
    for path in candidates:
        if path.is_file():
            return path
    raise ModelLoadError(
        f"No tokenizer found in {model_dir}: expected tekken.json, tokenizer.model.v3 or "
        "tokenizer.model. Copy the tokenizer file from the model's original release into "
        "this directory."
    )


def _load_mistral_tokenizer(path: Path) -> MistralTokenizer:
    if path.name != "tokenizer.model":
        return MistralTokenizer.from_file(str(path), mode=ValidationMode.test)
    # mlx-community conversions ship the v3 SentencePiece model under the bare name, which
    # mistral_common would read as v1 (no FIM tokens). Codestral's tokenizer is v3.
    version = TokenizerVersion.v3
    spm = SentencePieceTokenizer(path, tokenizer_version=version)
    return MistralTokenizer(
        InstructTokenizerV3(spm),
        validator=get_validator(version, mode=ValidationMode.test),
        request_normalizer=get_normalizer(version, spm.model_settings_builder),
    )


class CodestralTokenizer:
    """Encodes FIM and chat requests exactly as mistral_common does, and decodes streams."""

    def __init__(self, path: Path):
        try:
            self._mistral = _load_mistral_tokenizer(path)
        except (MistralCommonException, AssertionError, OSError, RuntimeError) as exc:
            raise ModelLoadError(
                f"Cannot read the tokenizer {path}: {exc}. Replace it with the tokenizer file "
                "from the model's original release."
            ) from exc
        self.path = path
        self._raw = self._mistral.instruct_tokenizer.tokenizer
        vocab = self._raw.vocab()
        missing = [t for t in FIM_CONTROL_TOKENS if t not in vocab]
        if missing:
            raise ModelLoadError(
                f"The tokenizer {path} has no {', '.join(missing)} token, so it cannot encode "
                "fill-in-the-middle requests. Use Codestral's tokenizer (tokenizer.model.v3)."
            )
        self.vocab_size: int = self._raw.n_words
        self.bos_id: int = self._raw.bos_id
        self.eos_id: int = self._raw.eos_id
        self.token_bytes: list[bytes] = self._token_bytes(vocab)
        # No token spells more characters than this: bounds a prompt's length before encoding.
        self.max_token_chars: int = max(len(b) for b in self.token_bytes)

    def _token_bytes(self, vocab: list[str]) -> list[bytes]:
        # One bytes value per id, looked up per generated token (no per-token library call).
        if isinstance(self._raw, Tekkenizer):
            return [
                self._raw.id_to_byte_piece(i, SpecialTokenPolicy.IGNORE)
                for i in range(self.vocab_size)
            ]
        table = []
        for i, piece in enumerate(vocab):
            if self._raw.is_special(i):
                table.append(b"")
            elif match := _BYTE_PIECE.match(piece):
                table.append(bytes([int(match.group(1), 16)]))
            else:
                table.append(piece.replace("\u2581", " ").encode("utf-8"))
        return table

    def encode_fim(self, prompt: str, suffix: str = "") -> list[int]:
        """`<s>[SUFFIX]suffix[PREFIX]prompt` as token ids, exactly as mistral_common builds it."""
        return self._mistral.encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens

    def encode(self, text: str) -> list[int]:
        """`text` as plain-text token ids, no BOS (control-token look-alikes stay text)."""
        return self._raw.encode(text, bos=False, eos=False)

    def encode_raw(self, text: str) -> list[int]:
        """A ready-made prompt (Ollama's `raw`) as token ids: the control tokens spelled in it
        (`<s>`, `[SUFFIX]`, `[PREFIX]`, `[INST]`, ...) become their ids and the text between them
        is encoded as `encode_fim` encodes each part (a suffix without the leading space), so
        `<s>[SUFFIX]s[PREFIX]p` gives exactly `encode_fim("p", "s")`. BOS is added when the
        text does not start with it."""
        pieces = [p for p in self._control_pattern.split(text) if p]
        ids = [] if pieces and pieces[0] == "<s>" else [self.bos_id]
        infilling = self._mistral.instruct_tokenizer._encode_infilling  # the suffix's encoding
        for before, piece in zip([None, *pieces], pieces, strict=False):
            if (control := self._control_ids.get(piece)) is not None:
                ids.append(control)
            else:
                ids += infilling(piece) if before == "[SUFFIX]" else self.encode(piece)
        return ids

    @functools.cached_property
    def _control_ids(self) -> dict[str, int]:
        vocab = self._raw.vocab()
        return {
            piece: i
            for i, piece in enumerate(vocab)
            if self._raw.is_special(i) and piece != "<unk>" and not piece.startswith("[control")
        }

    @functools.cached_property
    def _control_pattern(self) -> re.Pattern[str]:
        names = sorted(self._control_ids, key=len, reverse=True)
        return re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

    def count(self, text: str) -> int:
        """How many tokens `text` takes as plain text."""
        return len(self.encode(text))

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Instruct-format token ids for OpenAI/Mistral-style messages ({role, content})."""
        for message in messages if isinstance(messages, list) else []:
            parts = message.get("content") if isinstance(message, dict) else None
            for part in parts if isinstance(parts, list) else []:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise InvalidRequestError(
                        f"Codestral reads text only; a content part of type {kind!r} (an "
                        "image or other media) cannot be sent. Send the text parts alone."
                    )
        try:
            request = ChatCompletionRequest.model_validate({"messages": messages})
            return self._mistral.encode_chat_completion(request).tokens
        except (ValidationError, MistralCommonException, TypeError, ValueError) as exc:
            raise InvalidRequestError(
                f"Invalid chat messages: {_first_line(exc)}. Send a list of "
                "{'role': 'system'|'user'|'assistant', 'content': str} that ends with a user "
                "message."
            ) from exc

    def decode(self, ids: Iterable[int]) -> str:
        """Text of generated ids as a continuation (leading spaces kept)."""
        decoder = StreamDecoder(self)
        return "".join(decoder.push(i) for i in ids) + decoder.flush()


class StreamDecoder:
    """Turns generated ids into text deltas that are always complete UTF-8 characters."""

    def __init__(self, tokenizer: CodestralTokenizer):
        self._bytes = tokenizer.token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._bytes[token_id])

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else error["msg"]
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@functools.cache
def codestral_tokenizer() -> CodestralTokenizer:
    """Codestral-22B's own v3 tokenizer (shipped by mistral_common), without a model: for
    counting tokens where no engine runs. One per process (it is read-only once built)."""
    from ..weights.tiny import tokenizer_path

    return CodestralTokenizer(tokenizer_path())
