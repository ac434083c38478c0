# Sentiment classification (positivo / negativo): the run of `make demo`. The shipped 6x256 character
# backbone stays frozen and the head is a linear probe (finetune_cls.py, probe_head) on pool='layers':
# the mean over each text's tokens of every block's output and of the final states, side by side,
# standardized, an L2 logistic regression with its penalty cross-validated on train.
# Measured on the shipped data (README "A backbone that transfers"): 0.752 over seeds 1-3 (0.699 with
# the default seed), against 0.694 for the final states alone (pool='mean'), 0.661 for training the
# last block of the demo's own out/, and 0.593 for the same probe on a random 6x256 network; ~15 s on
# 2 CPU cores. --init_from=out --freeze=last_n --pool=mean classifies with the demo's own model.
init_from = "pretrained/es-char-6x256"
out_dir = "out-cls"
data = "data/es/sentiment"
pool = "layers"
freeze = "backbone"
# for --freeze=last_n / none (a training loop): the setting measured best for the demo's 4x128 out/
unfreeze_last = 1
max_iters = 600
eval_interval = 25
patience = 6
learning_rate = 1e-3
batch_size = 32
