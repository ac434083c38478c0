# nanoGPT's README CPU recipe, reproduced in this kit: the baseline row of `bench.py race`.
# GPT-2 style block (learned positions, LayerNorm, GELU MLP, biases), tied embeddings.
dataset = "shakespeare_char"
out_dir = "out-bench-nanogpt"
block_size = 64
batch_size = 12
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = True
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 2000
lr_decay_iters = 2000
warmup_iters = 100
beta2 = 0.99
weight_decay = 0.1
grad_clip = 1.0
eval_interval = 250
eval_iters = 20
log_interval = 1
device = "cpu"
compile = False
