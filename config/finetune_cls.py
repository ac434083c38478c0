# Sentiment classification (positivo / negativo) on top of the pretrained GPT in out/ (make demo).
# The backbone stays frozen: its vectors are computed once and only a linear head trains, so the
# whole run (train + test) takes about a minute on 2 CPU cores. See the README for the other modes.
init_from = "out"
out_dir = "out-cls"
data = "data/es/sentiment"
pool = "last"
freeze = "backbone"
max_iters = 600
eval_interval = 25
patience = 6
learning_rate = 1e-3
batch_size = 32
