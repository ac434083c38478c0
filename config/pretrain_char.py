# The default pretraining run of `make demo`: a 0.8M-parameter character-level GPT on the
# shipped Spanish corpus, sized to train in about 4 minutes on 2 CPU cores.
out_dir = "out"
dataset = "es"
block_size = 256  # room for an instruction prompt + its answer (finetune_instr.py)
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # dropout would make attention 2.4x slower on CPU (no fused kernel); the best-val checkpoint guards against overfitting
batch_size = 16
learning_rate = 2e-3
max_iters = 1500
lr_decay_iters = 1500
warmup_iters = 50
min_lr = 2e-4
eval_interval = 250
eval_iters = 20
log_interval = 50
