# The default pretraining run of `make demo`: a ~1.8M-parameter character-level GPT on the
# shipped Spanish corpus, sized to train in about 4-5 minutes on 2 CPU cores.
out_dir = "out"
dataset = "es"
block_size = 256  # long enough for an instruction prompt + its answer
n_layer = 4
n_head = 6
n_embd = 192
dropout = 0.1  # the corpus is small (~340k training characters): some regularization helps
batch_size = 16
learning_rate = 2e-3
max_iters = 1100
lr_decay_iters = 1100
warmup_iters = 50
min_lr = 2e-4
eval_interval = 250
eval_iters = 20
log_interval = 50
