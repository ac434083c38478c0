# Sentiment classification (positivo / negativo) on the pretrained GPT in out/: the run of `make demo`.
# Measured on the shipped data (3 seeds, README "A backbone that transfers"): the last block + final
# norm trainable with mean pooling is the best setting we found for this backbone, in about 40 s on 2
# CPU cores. The longer-trained 6x256 backbone in pretrained/ did not classify better with it (README).
init_from = "out"
out_dir = "out-cls"
data = "data/es/sentiment"
pool = "mean"
freeze = "last_n"
unfreeze_last = 1
max_iters = 600
eval_interval = 25
patience = 6
learning_rate = 1e-3
batch_size = 32
