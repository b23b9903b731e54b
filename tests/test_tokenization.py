"""FIM and chat token ids are exactly mistral_common's; decoding streams valid UTF-8."""

from __future__ import annotations

import random

import pytest
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.protocol.instruct.request import ChatCompletionRequest

from codestral_engine import InvalidRequestError
from codestral_engine.core.tokenizer import StreamDecoder

LOOKALIKES = ["[PREFIX]", "[SUFFIX]", "[MIDDLE]", "[INST]", "[/INST]", "</s>", "<s>", "<unk>", "▁"]
ALPHABET = list("abcXYZ019_(){}[]:;.,'\"#=+-*/ \t\n") + list(
    "éßøπλжд中文日本語한국😀🚀👍🏽\u200b\u00a0"
)
CONTROL_IDS = {1, 2, 3, 4, 11, 12, 13}  # <s> </s> [INST] [/INST] [PREFIX] [MIDDLE] [SUFFIX]


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return ""
    if kind < 0.2:
        return "".join(rng.choice(" \t\n") for _ in range(rng.randint(1, 8)))
    parts = []
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.2:
            parts.append(rng.choice(LOOKALIKES))
        else:
            parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 10))))
    return "".join(parts)


def test_fim_ids_equal_mistral_common_for_1000_random_pairs(engine, reference_tokenizer):
    # The engine's tokenizer comes from the model directory (mlx layout: a bare tokenizer.model).
    rng = random.Random(1234)
    for _ in range(1000):
        prefix, suffix = random_text(rng), random_text(rng)
        expected = reference_tokenizer.encode_fim(FIMRequest(prompt=prefix, suffix=suffix)).tokens
        assert engine.tokenizer.encode_fim(prefix, suffix) == expected, (prefix, suffix)


def test_control_token_lookalikes_in_user_code_stay_text(engine):
    code = "x = '[PREFIX]' + '[SUFFIX]'  # </s> [INST] <s> [MIDDLE]"
    ids = engine.tokenizer.encode_fim(code, code)
    # Exactly the layout's own <s> [SUFFIX] ... [PREFIX]; nothing from the user's text.
    assert [i for i in ids if i in CONTROL_IDS] == [1, 13, 11]
    assert ids[:2] == [1, 13]


def test_request_carries_exact_fim_ids(fresh_engine, reference_tokenizer):
    prefix, suffix = "def add(a, b):\n    return", "\n\nprint(add(1, 2))  # [PREFIX]"
    done = fresh_engine.fim(prefix, suffix, max_tokens=2).result()
    expected = reference_tokenizer.encode_fim(FIMRequest(prompt=prefix, suffix=suffix)).tokens
    assert list(done.prompt_token_ids) == expected


def test_chat_ids_equal_mistral_common(engine, reference_tokenizer):
    rng = random.Random(99)
    for _ in range(200):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": random_text(rng) or "Be brief."})
        for turn in range(rng.randint(0, 2)):
            messages.append({"role": "user", "content": random_text(rng) or f"q{turn}"})
            messages.append({"role": "assistant", "content": random_text(rng) or f"a{turn}"})
        messages.append({"role": "user", "content": random_text(rng) or "[INST] hi </s>"})
        request = ChatCompletionRequest.model_validate({"messages": messages})
        expected = reference_tokenizer.encode_chat_completion(request).tokens
        assert engine.tokenizer.encode_chat(messages) == expected, messages


@pytest.mark.parametrize(
    "messages,cause",
    [
        ([], "at least one message"),
        ([{"role": "wizard", "content": "hi"}], "messages.0: Input tag 'wizard'"),
        ([{"content": "no role"}], "messages.0: Unable to extract tag"),
        ("not a list", "messages: Input should be a valid list"),
    ],
)
def test_bad_chat_messages_are_a_clear_error(engine, messages, cause):
    with pytest.raises(InvalidRequestError) as info:
        engine.chat(messages)
    assert cause in str(info.value)
    assert "Send a list of" in str(info.value)  # and how to fix it


def test_stream_decoder_never_splits_a_character(engine):
    tok = engine.tokenizer
    text = "naïve 中文 🦀 ꙮ done"  # 🦀 and ꙮ are not in the vocab: spelled byte by byte
    ids = tok.encode_fim(text)[3:]  # the prefix part: <s>[SUFFIX][PREFIX] come first
    byte_tokens = [i for i in ids if len(tok.token_bytes[i]) == 1 and tok.token_bytes[i][0] >= 0x80]
    assert byte_tokens, "the emoji must be spelled with byte-fallback tokens for this test"
    decoder = StreamDecoder(tok)
    deltas = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) == " " + text  # the SentencePiece space before the prefix is kept
    # The 4 byte tokens of 🦀 give three empty deltas, then the whole character at once.
    crab = deltas.index("🦀")
    assert deltas[crab - 3 : crab] == ["", "", ""]


def test_decode_keeps_the_leading_space_of_a_continuation(engine):
    tok = engine.tokenizer
    ids = tok.encode_fim("return x")[3:]
    assert tok.decode(ids) == " return x"
