# The 4x128 pretraining recipe on the shipped Spanish corpus (topic texts, opinions, 14 books): ~230 s
# on 2 CPU cores. On character data (python prepare.py) it is 1,100 steps, ~4.5M characters, half an
# epoch: the lesson is the loop, the loss curve and what a small model learns in minutes. `make demo`
# runs it on BPE data with config/pretrain_bpe.py after it (2 layers, a 165-s budget).
from checkpoint import cpu_has_fast_bf16

out_dir = "out"
dataset = "es"
block_size = 256  # room for an instruction prompt + its answer (finetune_instr.py)
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # dropout would make attention 2.4x slower on CPU (no fused kernel); the best-val checkpoint guards against overfitting
# the fast recipe (README "Performance"): rotary positions, RMSNorm, relu² MLP, no biases
bias = False
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
# bf16 autocast where the CPU has it natively (AVX512-BF16/AMX: ~1.3x here); elsewhere the default
dtype = "bfloat16" if cpu_has_fast_bf16() else "auto"
# and then the explicit attention math, not torch's fused kernel: in bf16 on CPU it is faster at this size
# (config/pretrain_bpe.py's 165 s: 969 steps and val 1.938 bits/byte against 824 and 1.951; README
# "Performance"). In float32, or on a GPU (add --use_sdpa=True), the fused kernel is the faster
use_sdpa = dtype != "bfloat16"
batch_size = 16
learning_rate = 3e-3
max_iters = 1100
lr_decay_iters = 1100
warmup_iters = 50
min_lr = 3e-4
eval_interval = 275
eval_iters = 20
log_interval = 50
