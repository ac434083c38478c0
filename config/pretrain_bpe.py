# The default pretraining run of `make demo`: the 4x128 GPT of config/pretrain_char.py on the shipped
# Spanish corpus prepared with byte-level BPE (python prepare.py --tokenizer=bpe --vocab_size=2048:
# 2.85 characters per token). Same wall-clock budget as the character run (~230 s on 2 CPU cores):
# a step costs ~1.3x more (the 2,048-row output layer), so 845 steps instead of 1,100, but each token
# carries ~2.9x more text. Why BPE is the demo's default: README "Tokenizers" (the char vs BPE table).
from checkpoint import cpu_has_fast_bf16

out_dir = "out"
dataset = "es"
block_size = 256  # 256 BPE tokens ~ 730 characters: room for a conversation (finetune_instr.py)
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
# the fast recipe (README "Performance"): rotary positions, RMSNorm, relu² MLP, no biases
bias = False
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
dtype = "bfloat16" if cpu_has_fast_bf16() else "auto"
batch_size = 16
learning_rate = 3e-3
max_iters = 845
lr_decay_iters = 845
warmup_iters = 50
min_lr = 3e-4
eval_interval = 211
eval_iters = 20
log_interval = 50
