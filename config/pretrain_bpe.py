# The default pretraining run of `make demo`, on top of config/pretrain_char.py (the same 4x128 model
# and recipe; config files apply in order):
#     python prepare.py --tokenizer=bpe --vocab_size=2048      # 2.85 characters per token
#     python train.py config/pretrain_char.py config/pretrain_bpe.py
# Same wall-clock budget as the character run (~230 s on 2 CPU cores): a step costs ~1.3x more (the
# 2,048-row output layer), so 845 steps instead of 1,100, but each token carries ~2.9x more text.
# Why BPE is the demo's default: README "Tokenizers" (the char vs BPE table).
max_iters = 845
lr_decay_iters = 845
eval_interval = 211
