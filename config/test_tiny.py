# A tiny model for the test suite and quick experiments: trains in seconds on a CPU.
block_size = 32
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0
batch_size = 8
learning_rate = 3e-3
max_iters = 40
lr_decay_iters = 40
warmup_iters = 5
eval_interval = 20
eval_iters = 5
log_interval = 10
device = "cpu"
