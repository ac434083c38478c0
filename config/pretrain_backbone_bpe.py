# The shipped BPE backbone (pretrained/es-bpe2048-4x128/): the 4x128 model of config/pretrain_char.py
# (BPE 2,048) trained 5,400 steps, ~27 minutes on 2 CPU cores. `make demo` still pretrains its own
# small model for the lesson (out/: 2 layers, 165 s); its instruction finetune starts from this
# one, which reads paraphrases better (README, "Starting from a longer-trained backbone"). Reproduce it with
# `make backbone-bpe`:
#   python prepare.py --tokenizer=bpe --vocab_size=2048
#   python train.py config/pretrain_char.py config/pretrain_backbone_bpe.py
#   python checkpoint.py --src=out-backbone-bpe --dst=pretrained/es-bpe2048-4x128   # weights only, bf16
out_dir = "out-backbone-bpe"
max_iters = 5400
lr_decay_iters = 5400
eval_interval = 900
max_seconds = 2100  # a guard: stop (with a final evaluation and checkpoint) after 35 minutes of training
