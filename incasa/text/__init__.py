"""A mixture-of-experts language model trained in-house, served as chat (issue 10).

    tokenizer.py  byte-level BPE (tokenizers) + the chat template      moe_lm.py  the MoE decoder and PRESETS
    engine.py     KV-cache decoding, sampling, stop strings, batches   data.py    corpora from Debian / user folders
    train.py      the visible training loop with exact resume          chat.py    load_model, chat, chat_batch
    cli.py        `incasa chat`, `incasa train text`                   default/   the shipped model + how it was made

The MoE layer itself (routing, grouped GEMM, loss-free balancing) is incasa/nn/moe.py.
Public API for serve and arena: `incasa.text.chat.load_model`, `chat` (a stream of text deltas with usage and
finish_reason) and `chat_batch`.
"""
