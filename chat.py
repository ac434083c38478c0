"""
Answering with an instruction model (finetune_instr.py's checkpoints): the chat template's prompt ids
for a question and the conversation so far, then the answer as token ids or as text, streamed. Shared by
sample.py, app.py, serve.py and evaluate.py; the template itself is tokenizer.encode_chat.
"""
import torch

from tokenizer import StreamDecoder


def prompt_ids(tok, prompt, block_size, max_new_tokens, history=(), system=""):
    """What an instruction model sees for a prompt: the chat template (tokenizer.encode_chat: the
    system prompt, earlier turns, <instr> prompt <resp>), oldest turns dropped and then the prompt cut
    from the left if needed so that an answer of max_new_tokens (at most a quarter of the window: the
    conversation matters more than room for an answer that long, which slides the window if
    it comes) still fits. Returns (ids, tokens cut, turns dropped)."""
    ids, dropped, cut = tok.encode_chat(prompt, history, system,
                                        max_len=block_size - min(max_new_tokens, block_size // 4))
    return ids, cut, dropped


def answer_ids(model, tok, prompt, max_new_tokens=128, temperature=0.0, top_k=None, generator=None,
               history=(), system=""):
    """Yield the token ids an instruction model writes after prompt (and the conversation so far), its
    final <eos> included. Raw traces are built from these ids, not from the text: special tokens have
    no text to encode back."""
    ids = prompt_ids(tok, prompt, model.config.block_size, max_new_tokens, history, system)[0]
    idx = torch.tensor([ids], dtype=torch.long, device=model.wte.weight.device)  # (1, T)
    for t in model.generate_stream(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                   stop_token=tok.eos_id, generator=generator):
        yield t.item()


def answer_stream(model, tok, prompt, max_new_tokens=128, temperature=0.0, top_k=None, generator=None,
                  history=(), system=""):
    """Yield an instruction model's answer to prompt token by token, until <eos>: (id, text) per new token,
    then (None, the rest). A character whose bytes BPE split across tokens comes out whole, once its last
    byte is there (its text is "" until then); <eos> and the other specials add no text."""
    dec = StreamDecoder(tok)
    for i in answer_ids(model, tok, prompt, max_new_tokens, temperature, top_k, generator, history, system):
        yield i, dec.add(i)
    yield None, dec.flush()
