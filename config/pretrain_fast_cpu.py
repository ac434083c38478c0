# Our fast CPU recipe, raced against config/bench_nanogpt_cpu.py by `python bench.py --mode=race`.
# Same size as nanoGPT's CPU model (4 layers, 4 heads, 128 wide) with the levers that paid off
# here: rotary positions, RMSNorm, relu² MLP, no biases; a longer context per step
# (block 128, batch 16: 2,048 tokens instead of 768), a 3x higher learning rate, and a short
# cosine schedule so the rate has decayed by the time the target is near.
dataset = "shakespeare_char"
out_dir = "out-fast"
block_size = 128
batch_size = 16
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
learning_rate = 3e-3
min_lr = 3e-4
max_iters = 450
lr_decay_iters = 450
warmup_iters = 50
beta2 = 0.99
weight_decay = 0.1
eval_interval = 50
eval_iters = 20
log_interval = 10
device = "cpu"
