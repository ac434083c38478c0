# The default pretraining run of `make demo`, on top of config/pretrain_char.py (the same recipe; config
# files apply in order):
#     python prepare.py --tokenizer=bpe --vocab_size=2048      # 2.85 characters per token
#     python train.py config/pretrain_char.py config/pretrain_bpe.py
# A fixed wall-clock budget, not a number of steps: the run stops by itself after 165 s (start-up and
# evaluations included) and its learning rate follows the clock, so the lesson takes the same time on
# any machine (a faster one takes more steps and gets a better model). Why BPE is the demo's default:
# README "Tokenizers" (the char vs BPE table).
# Two layers, not config/pretrain_char.py's four: at this budget the shallower model takes ~1.5x more
# steps and ends better. Val bits per byte in 165 s on 2 CPU cores (README "Pretraining", 2026-11-30):
# 2 layers 1.957 (845 steps), 3 layers 2.010, 4 layers 2.087; 2 layers x 192 wide 1.980; 2 layers at
# learning rate 4e-3 1.958. The previous default (4 layers, 845 fixed steps) reached ~1.93 in ~250 s.
# Since then the explicit attention (config/pretrain_char.py: use_sdpa) fits 969 steps in the budget: 1.938.
n_layer = 2
time_budget = 165
max_iters = 100_000  # a cap only: the budget ends the run
lr_decay_iters = 845  # with a budget, the schedule's length in steps maps onto the budget's seconds
eval_interval = 211
