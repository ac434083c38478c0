# The shipped backbone (pretrained/es-char-6x256/): a 4.8M-parameter character-level GPT trained for
# 50 minutes on 2 CPU cores (max_seconds stopped it at step 3,312 of 3,600) on the whole default corpus
# (topic texts, opinions, 14 books). `make demo` pretrains a small model of its own for the lesson, and
# its sentiment classifier starts from this one (README, "A backbone that transfers"). Longer runs
# (7,200 and 12,000 steps) made better language models but no better classifier: README, "Longer
# pretraining". Reproduce it with `make backbone`:
#   python prepare.py
#   python train.py config/pretrain_backbone.py
#   python checkpoint.py --src=out-backbone --dst=pretrained/es-char-6x256   # weights only, bf16
out_dir = "out-backbone"
dataset = "es"
block_size = 256
n_layer = 6
n_head = 8
n_embd = 256
dropout = 0.0
bias = False
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
dtype = "bfloat16"  # on this CPU (AVX512-BF16) 40 iterations took 36.5 s vs 131.6 s in float32; use float32 where bf16 is slow
batch_size = 16
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 100
max_iters = 3600
lr_decay_iters = 3600
eval_interval = 600
eval_iters = 20
log_interval = 50
max_seconds = 3000  # a guard: stop (with a final evaluation and checkpoint) after 50 minutes of training
