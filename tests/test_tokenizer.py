"""tokenizer.py: the character tokenizer, text cleaning, special tokens, the instruction format."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer import (BASE_CHARS, CLOSERS, OPENERS, SPECIALS, CharTokenizer, clean_text, instruction_example,
                       noisy_prompt)


def test_tokenizer_round_trip_and_specials_first():
    tok = CharTokenizer.from_texts(["¿Los perros son caninos? ¡Sí, señor!\n\tÜ"])
    text = "¿Los perros son caninos? ¡Sí, señor!"
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab[:len(SPECIALS)] == SPECIALS
    assert all(i >= len(SPECIALS) for i in tok.encode(text))


def test_unseen_characters_become_unk():
    tok = CharTokenizer.from_texts(["abc"])
    ids = tok.encode("aZb😀")
    assert ids[1] == tok.unk_id and ids[3] == tok.unk_id
    assert ids[0] != tok.unk_id and ids[2] != tok.unk_id


def test_special_token_text_is_plain_characters():
    tok = CharTokenizer.from_texts(["<resp> <instr> <eos> <pad>"])
    ids = tok.encode("<resp>")
    assert len(ids) == 6
    assert tok.resp_id not in ids and not set(ids) & set(range(len(SPECIALS)))
    ids, _ = tok.encode_instruction("di <resp> hola", "ok")
    assert ids.count(tok.resp_id) == 1 and ids.count(tok.instr_id) == 1 and ids[-1] == tok.eos_id


def test_clean_text():
    assert clean_text("a\r\nb\rc\x00d\x07\te") == "a\nb\ncd\te"
    assert clean_text("Cafe\u0301") == "Café"  # NFC: e + combining accent -> é
    assert clean_text("ÁRBOL", lowercase=True) == "árbol"
    # a lone surrogate (JSON can write "\ud800") cannot be encoded: the replacement mark; a stray BOM goes
    assert clean_text("a\ud800b\ufeffc") == "a\ufffdbc"



def test_instruction_example_masks_the_prompt_and_keeps_response_and_eos():
    """finetune_instr.py's own encoding: targets are ids[1:], and every target that is still part of
    the prompt is -100 (ignored by the loss)."""
    tok = CharTokenizer.from_texts([BASE_CHARS])
    x, y, cut = instruction_example(tok, "hola", "sí", max_len=64)
    ids = [tok.instr_id, *tok.encode("hola"), tok.resp_id, *tok.encode("sí"), tok.eos_id]
    assert cut == 0 and x == ids[:-1] and len(y) == len(x)
    assert y == [-100] * len("<hola") + tok.encode("sí") + [tok.eos_id]  # first target: the answer, read at <resp>
    # truncation keeps the end of a long prompt and the whole response
    x, y, cut = instruction_example(tok, "x" * 50 + "¿pregunta?", "respuesta", max_len=30)
    assert len(x) == 29 and cut == (1 + 60 + 1 + 9 + 1) - 30  # <instr> prompt <resp> response <eos>
    assert tok.decode(x + y[-1:]).endswith("¿pregunta?respuesta")
    assert [t for t in y if t != -100] == tok.encode("respuesta") + [tok.eos_id]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=60), st.text(min_size=0, max_size=60))
def test_property_tokenizer_round_trip_unknowns_and_no_specials(vocab_text, text):
    tok = CharTokenizer.from_texts([vocab_text])
    ids = tok.encode(text)
    assert len(ids) == len(text)
    for ch, i in zip(text, ids):
        if ch in vocab_text:
            assert tok.vocab[i] == ch
        else:
            assert i == tok.unk_id
        assert i not in (tok.pad_id, tok.instr_id, tok.resp_id, tok.eos_id)  # never from text
    if set(text) <= set(vocab_text):
        assert tok.decode(ids) == text
    assert tok.vocab[: len(SPECIALS)] == SPECIALS




def test_noisy_prompt_noise_and_small_talk():
    """finetune_instr's prompt augmentation: off, it returns the prompt; noise_prob=1 changes the case
    (lower, UPPER or Title, all three seen), strips accents and ¿ and adds one typo; wrap_prob=1 puts the
    prompt, intact, after an opener, before a closer or between both, and all three happen."""
    q = "¿El Gato es un félido?"
    rng = random.Random(0)
    assert all(noisy_prompt(q, rng, 0.0, 0.0) == q for _ in range(50))
    cases = set()
    for _ in range(100):
        p = noisy_prompt(q, rng, 1.0)
        letters = p.replace("?", "")
        case = "lower" if letters == letters.lower() else "upper" if letters == letters.upper() else "title"
        cases.add(case)
        assert "é" not in p.lower() and "¿" not in p
        assert abs(len(p.rstrip("?")) - len("el gato es un felido")) <= 1  # one letter dropped, doubled or swapped
    assert cases == {"lower", "upper", "title"}
    sides = set()
    for _ in range(200):
        p = noisy_prompt(q, rng, 0.0, 1.0)
        head, _, tail = p.partition(q)
        assert q in p and (head == "" or head in OPENERS) and (tail == "" or tail in CLOSERS) and (head or tail)
        sides.add((bool(head), bool(tail)))
    assert sides == {(True, False), (False, True), (True, True)}
