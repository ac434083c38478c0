# The default instruction finetune of `make demo`: out/ (pretrained) -> out-instr/,
# then greedy evaluation on the held-out prompts of test.jsonl and conversations of chat_test.jsonl.
init_from = "out"
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
