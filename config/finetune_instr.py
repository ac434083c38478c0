# The default instruction finetune of `make demo`: the shipped BPE backbone -> out-instr/, then greedy
# evaluation on the held-out prompts of test.jsonl and conversations of chat_test.jsonl.
# pretrained/es-bpe2048-4x128 is the 4x128 model of config/pretrain_char.py trained 27 minutes (`make backbone-bpe`):
# it reads unusual phrasings better (README, "Starting from a longer-trained backbone"). --init_from=out finetunes
# the model that `make demo` has just pretrained instead.
init_from = "pretrained/es-bpe2048-4x128"
arch_from = "pretrained/es-bpe2048-4x128"  # --init_from=scratch: this network and tokenizer, random weights
# single questions, plus conversations (follow-ups, earlier turns to ignore, system prompts)
data = "data/es/instructions/train.jsonl,data/es/instructions/chat_train.jsonl"
test_data = "data/es/instructions/test.jsonl,data/es/instructions/chat_test.jsonl"
out_dir = "out-instr"
batch_size = 32
max_iters = 900
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 30
dropout = 0.0
eval_interval = 50
patience = 6
ema = 0.99
# small talk around 30% of the training prompts ("Hola. … ¿Me ayudas?"): over five seeds the facts rose
# 1-2 points on each held-out file and complete questions after unrelated turns 6 points (README)
wrap_prob = 0.3
