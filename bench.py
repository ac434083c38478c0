"""
Benchmarks: training throughput, a race between two recipes, and sampling speed.

    python bench.py --mode=train --config=config/pretrain_char.py     # tokens/s, ms/iter, MFU
    python bench.py --mode=race                                        # baseline vs fast recipe
    python bench.py --mode=race --dataset=es --target=1.60 --a=config/pretrain_char.py
    python bench.py --mode=race --nanogpt=../shared/ref/nanogpt   # real nanoGPT vs config b, to its final val
    python bench.py --mode=sample --out_dir=out                        # KV cache on vs off; batch 8 vs 1
    python bench.py --mode=prepare --prepare_mb=2000                   # prepare.py on a generated 2 GB folder
    python bench.py --mode=curve --backbone=out                        # what pretraining buys: a learning curve
    python bench.py --mode=resplit --backbone=pretrained/es-char-6x256 # the test split's luck: probe vs TF-IDF
    python bench.py --mode=serve --clients=16 --requests=4             # against a running serve.py

race runs the two configs one after the other (never at the same time: two PyTorch processes
on the same cores slow each other down badly), on the same prepared data, each until the
target val loss or the time budget, and prints time to target (evaluations included), the
val loss reached within the budget, tokens/s and the ratio. Its numbers are wall clock: run it
on an otherwise idle machine.
"""
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch

import configurator
from checkpoint import (CheckpointError, adamw, autocast, load_checkpoint, model_from_checkpoint, pick_device,
                        resolve_dtype)
from configurator import configure, fail, read_config_file
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
mode = "train"  # train | race | sample | prepare | curve | resplit | serve
# train: the model and batch shape come from a train.py config file
config = "config/pretrain_char.py"
iters = 20
dtype = "float32"  # float32 or bfloat16 (autocast)
# race
a = "config/bench_nanogpt_cpu.py"  # the baseline
b = "config/pretrain_fast_cpu.py"  # the challenger
dataset = "shakespeare_char"
target = 1.886  # val loss to reach
budget = 300.0  # training seconds each run may take (train.py's --max_seconds: evaluations not counted)
race_dir = "out-race"
# race against the real nanoGPT: its unmodified files (../shared/ref/nanogpt), run from a temporary copy
nanogpt = ""  # that folder; empty: config a (our reproduction of its recipe) stands in for it, as above
race_text = "../shared/data/tinyshakespeare/input.txt"  # with --nanogpt: the one text both sides train on
nanogpt_iters = 2000  # nanoGPT's README CPU recipe: 2,000 iterations (fewer only for quick checks)
# sample
out_dir = "out"
max_new_tokens = 500
prompt_len = -1  # -1: a prompt that fills the block (sampling at the block size); 1: start from "\n"; N: N tokens
prompt_file = "data/es/corpus/a_perros.txt"  # where a longer prompt comes from
runs = 5
batch = 8  # also decode this many prompts at once (cached) and compare the aggregate tokens/s to batch 1; 1: skip
compile = False  # also time the cached steps compiled (GPT.compile_decoding), batch 1 and batch, in the same runs
# prepare: a generated folder (.txt in UTF-8 and Latin-1, .jsonl.gz, .parquet) made of the shipped text
prepare_mb = 2000
prepare_dir = "bench-prepare"  # generated once (reused while its size fits), then prepared into data/bench_prepare
# curve: sentiment test accuracy with few and all labels, pretrained vs scratch vs TF-IDF (3 seeds each)
backbone = "out"
cls_config = "config/finetune_cls.py"
curve_labels = "40,120,0"  # training labels per point (balanced); 0 = all
seeds = 3
curve_svg = ""  # also draw the curve into this SVG file (the README's picture)
# resplit: cls_config's linear probe on backbone and TF-IDF, on the data's own split and on this many random
# re-splits of all its labelled texts (same sizes, stratified)
resplits = 20
pools = ""  # comma-separated poolings to compare side by side (e.g. layers,layers+max); empty: cls_config's
scratch = False  # the control: backbone's network with random weights (drawn with `seed`), never trained
# serve: N concurrent streaming clients x M requests each against a running serve.py
serve_url = "http://127.0.0.1:8000"
serve_model = "out-instr"
clients = 16
requests = 4
choices = 1  # "n" of each request: its choices are decoded together as one batch (serve.py's max_n: 8)
api_key = ""
serve_prompt = "¿Cuál es la capital de Costa Rica?"
device = "cpu"
seed = 1337
# -----------------------------------------------------------------------------
configure(globals())
try:
    device = pick_device(device)
    dtype = resolve_dtype(device, dtype)  # an unknown dtype is one line here, not later inside a benchmark
except ValueError as e:
    fail(e)
if "dtype" in configurator.given and mode != "train":  # the other modes run what their configs/checkpoints say
    fail(f"--dtype applies to --mode=train only (--mode={mode} runs each model in its own precision)")
# counts a benchmark divides by or takes a median of: at least 1
for name in ("iters", "runs", "max_new_tokens", "seeds", "clients", "requests", "choices", "prepare_mb", "nanogpt_iters"):
    if not isinstance(globals()[name], int) or globals()[name] < 1:
        fail(f"--{name} must be an integer >= 1, got {globals()[name]!r}")
if mode == "serve" and not re.match(r"https?://[^/:]+(:\d+)?/?$", serve_url):
    fail(f"--serve_url must look like http://HOST:PORT, got '{serve_url}'")
if mode == "curve" and not re.fullmatch(r"\d+(,\d+)*", curve_labels):
    fail(f"--curve_labels must be comma-separated label counts (0 = all), got '{curve_labels}'")
HERE = os.path.dirname(os.path.abspath(__file__))


def in_kit(path):
    """path as given if it exists here, else the same path inside the kit: the shipped files (prompt file,
    configs, data) are found whatever folder bench.py runs from."""
    return path if os.path.exists(path) else os.path.join(HERE, path)


def matmul_peak(dt):
    """Measured peak FLOP/s of one large matmul in this dtype on this device (the MFU denominator)."""
    n = 2048
    x = torch.randn(n, n, device=device, dtype=dt)
    y = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(2):
        x @ y
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        x @ y
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def bench_train():
    cfg = read_config_file(config)
    defaults = GPTConfig()
    args = {k: cfg.get(k, getattr(defaults, k)) for k in GPTConfig.__dataclass_fields__ if k != "vocab_size"}
    args["vocab_size"] = 128  # a typical character vocabulary (data is random tokens here)
    if dtype != cfg.get("dtype", "float32"):  # the config chose its attention kernel for its own precision
        args["use_sdpa"] = True  # (the CPU recipes: explicit in bf16); in another, time train.py's default
    B, T = cfg.get("batch_size", 12), args["block_size"]
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**args)).to(device).train()
    opt = adamw(model.parameters(), 0.1, 1e-3, (0.9, 0.99), device.split(":")[0])
    ctx = autocast(device, dtype)
    x = torch.randint(0, 128, (B, T), device=device)
    times = []
    for i in range(iters + 3):  # 3 warm-up iterations
        t0 = time.perf_counter()
        with ctx:
            _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    # training FLOPs per token: 6 per weight (forward + backward) + attention scores and values
    n_weights = model.num_params() - (model.wpe.weight.numel() if model.wpe is not None else 0)
    flops_tok = 6 * n_weights + 12 * args["n_layer"] * T * args["n_embd"]
    peak = matmul_peak(getattr(torch, dtype))  # the peak of the precision the matmuls run in
    tok_s = B * T / dt
    print(f"config {config}: {model.num_params():,} parameters, batch {B} x {T}, {dtype} on {device}, "
          f"attention {'fused (sdpa)' if args['use_sdpa'] else 'explicit'}")
    print(f"{dt * 1000:.1f} ms/iter (median of {iters}) | {tok_s:,.0f} tokens/s | "
          f"{flops_tok * tok_s / 1e9:.1f} GFLOP/s | matmul peak {peak / 1e9:.0f} GFLOP/s | "
          f"MFU {100 * flops_tok * tok_s / peak:.1f}%")


def race_one(cfg_path, name):
    out = os.path.join(race_dir, name)
    cmd = [sys.executable, os.path.join(HERE, "train.py"), cfg_path, f"--dataset={dataset}", f"--out_dir={out}",
           "--overwrite=True", f"--target_val_loss={target}", f"--max_seconds={budget}", f"--device={device}"]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode:
        fail(f"{cfg_path} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(os.path.join(out, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    evals = [r for r in log if "val_loss" in r]
    hit = next((r for r in evals if r["val_loss"] <= target), None)
    in_budget = [r for r in evals if r["elapsed_s"] <= budget]
    speeds = [r["tokens_per_s"] for r in log if "tokens_per_s" in r]
    return {"config": cfg_path, "time_to_target_s": hit["elapsed_s"] if hit else None,
            "iters_to_target": hit["iter"] if hit else None, "final_val": evals[-1]["val_loss"],
            "final_iter": evals[-1]["iter"], "best_val_within_budget": min((r["val_loss"] for r in in_budget), default=None),
            "run_wall_s": round(wall, 1), "median_tokens_per_s": statistics.median(speeds) if speeds else 0}


def bench_race():
    if not os.path.isfile(os.path.join("data", dataset, "meta.json")):
        fail(f"no prepared data in data/{dataset}/ (run: python prepare.py --dataset={dataset})")
    rows = [race_one(a, "a"), race_one(b, "b")]
    print(f"race on data/{dataset}: target val loss {target}, budget {budget:.0f} s per run, device {device}")
    print(f"{'config':<32}{'time to target':>16}{'iters':>7}{'best val ≤ budget':>19}{'final val':>11}"
          f"{'tokens/s':>10}{'wall':>8}")
    for r in rows:
        ttt = f"{r['time_to_target_s']:.1f} s" if r["time_to_target_s"] is not None else "not reached"
        best = r["best_val_within_budget"]  # None: no evaluation ended inside the budget
        print(f"{r['config']:<32}{ttt:>16}{str(r['iters_to_target'] or '-'):>7}"
              f"{'-' if best is None else f'{best:.4f}':>19}"
              f"{r['final_val']:>11.4f}{r['median_tokens_per_s']:>10,.0f}{r['run_wall_s']:>7.1f}s")
    ta, tb = rows[0]["time_to_target_s"], rows[1]["time_to_target_s"]
    if ta and tb:
        print(f"ratio (time to target, a / b): {ta / tb:.2f}x")
    print(json.dumps(rows))


# what each trainer prints at an evaluation: nanoGPT "step 250: train loss 2.0, val loss 2.1"; ours
# "eval 250: train 2.0, val 2.1 nats/token ..." (or "eval 250: val 2.1 ..." without the train estimate)
EVAL_LINE = {"nanogpt": re.compile(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)"),
             "ours": re.compile(r"^eval (\d+): .*?val ([\d.]+) nats/token")}


def timed_evals(cmd, cwd, kind):
    """Run a training command and read its evaluations as they are printed: [(seconds since the
    process started, iteration, val loss)], and the whole run's wall time. Output is unbuffered, so
    a line's time is the time the evaluation ended."""
    t0 = time.time()
    # stderr joins stdout: one pipe read to the end can never fill up and block the trainer
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    evals, last = [], "no evaluation printed"
    for line in proc.stdout:
        m = EVAL_LINE[kind].match(line)
        if m:
            evals.append((time.time() - t0, int(m.group(1)), float(m.group(2))))
        last = line.strip() or last
    if proc.wait() or not evals:
        fail(f"{' '.join(os.path.basename(c) for c in cmd[:3])} failed in {cwd}: {last}")
    return evals, time.time() - t0


def bench_race_nanogpt():
    """Real nanoGPT (its README CPU recipe, from a temporary copy of its unmodified files) against
    config b on the same text: time from process start to nanoGPT's final val loss. Config a, our
    in-code reproduction of the recipe, runs too, so its gap to the real code is printed."""
    import shutil
    import tempfile

    from corpus import CorpusError, read_text
    from tokenizer import clean_text
    if not os.path.isfile(os.path.join(nanogpt, "train.py")) or \
            not os.path.isfile(os.path.join(nanogpt, "data", "shakespeare_char", "prepare.py")):
        fail(f"--nanogpt={nanogpt} is not a nanoGPT checkout (train.py and data/shakespeare_char/prepare.py)")
    try:
        text = clean_text(read_text(race_text)[0])  # exactly what our prepare.py reads from the file
    except (OSError, CorpusError) as e:
        fail(f"--race_text: {e}")
    os.makedirs(race_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="race-nanogpt-", dir=race_dir)  # removed at the end
    work = os.path.abspath(work)
    ng = os.path.join(work, "nanogpt")
    shutil.copytree(nanogpt, ng)  # a throwaway copy: the reference folder may be read-only
    for dirpath, dirs, files in os.walk(ng):
        for name in dirs + files:
            os.chmod(os.path.join(dirpath, name), 0o755 if name in dirs else 0o644)
    # both sides split the same text 90/10 contiguously (ours appends one blank line before its cut)
    with open(os.path.join(ng, "data", "shakespeare_char", "input.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(work, "text.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    for cmd, cwd in (([sys.executable, "prepare.py"], os.path.join(ng, "data", "shakespeare_char")),
                     ([sys.executable, os.path.join(HERE, "prepare.py"), "--input=text.txt", "--dataset=race"], work)):
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if p.returncode:
            fail(f"prepare failed in {cwd}: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    n = nanogpt_iters
    recipe = ["config/train_shakespeare_char.py", f"--device={device}", "--compile=False", "--eval_iters=20",
              "--log_interval=1000", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
              "--n_embd=128", f"--max_iters={n}", f"--lr_decay_iters={n}", "--dropout=0.0", f"--out_dir={work}/ng-out"]
    print(f"nanoGPT ({nanogpt}, its README CPU recipe, {n} iterations) on {race_text} ...", flush=True)
    real, real_wall = timed_evals([sys.executable, "train.py", *recipe], ng, "nanogpt")
    tgt = real[-1][2]  # the target: nanoGPT's val loss at its last evaluation
    def ours(cfg, *flags):  # our train.py on the same text (prepared in work/data/race)
        return [sys.executable, os.path.join(HERE, "train.py"), os.path.abspath(cfg), "--dataset=race",
                "--overwrite=True", f"--device={device}", *flags]
    print(f"ours ({b}) to val {tgt:.4f} ...", flush=True)
    fast, fast_wall = timed_evals(ours(b, "--out_dir=b", f"--target_val_loss={tgt}", f"--max_seconds={budget}"),
                                  work, "ours")
    print(f"our reproduction of the recipe ({a}) ...", flush=True)
    repro, repro_wall = timed_evals(ours(a, "--out_dir=a", f"--max_iters={n}", f"--lr_decay_iters={n}"), work, "ours")
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, evals, wall in (("nanoGPT (real)", real, real_wall), (f"ours: {b}", fast, fast_wall),
                              (f"reproduction: {a}", repro, repro_wall)):
        hit = next((e for e in evals if e[2] <= tgt), None)
        rows.append({"run": name, "time_to_target_s": round(hit[0], 1) if hit else None,
                     "iters_to_target": hit[1] if hit else None, "final_val": evals[-1][2],
                     "final_iter": evals[-1][1], "run_wall_s": round(wall, 1)})
    print(f"race on {race_text}: target = nanoGPT's final val {tgt:.4f}; times from process start, "
          f"evaluations included, device {device}")
    print(f"{'run':<44}{'time to target':>16}{'iters':>7}{'final val':>11}{'wall':>8}")
    for r in rows:
        ttt = f"{r['time_to_target_s']:.1f} s" if r["time_to_target_s"] is not None else "not reached"
        print(f"{r['run']:<44}{ttt:>16}{str(r['iters_to_target'] or '-'):>7}{r['final_val']:>11.4f}"
              f"{r['run_wall_s']:>7.1f}s")
    t_real, t_fast, t_repro = (r["time_to_target_s"] for r in rows)
    if t_real and t_fast:
        print(f"ratio (real nanoGPT / ours): {t_real / t_fast:.2f}x")
    print(f"reproduction vs real: final val {rows[2]['final_val']:.4f} vs {tgt:.4f}, wall "
          f"{repro_wall:.1f} s vs {real_wall:.1f} s ({repro_wall / real_wall:.2f}x)")
    print(json.dumps(rows))


def bench_sample():
    try:
        ckpt = load_checkpoint(out_dir, kinds=("pretrain", "instr"))
        model, tok = model_from_checkpoint(ckpt, device)
    except CheckpointError as e:
        fail(e)
    bs = model.config.block_size
    if prompt_len == 0 or prompt_len < -1 or prompt_len > bs:
        fail(f"--prompt_len must be -1 (a full block) or a number of tokens from 1 to the block size {bs}, "
             f"got {prompt_len}")
    # the prompt: "\n" alone, or (prompt_len=-1) a window full of real text, so that every step
    # works at the block size (the uncached path recomputes 128..256 tokens per step, not 1..256)
    n = bs if prompt_len == -1 else prompt_len
    path = in_kit(prompt_file)
    if n > 1 and not os.path.isfile(path):
        fail(f"prompt file not found: {prompt_file}")
    if batch < 1:
        fail(f"--batch must be >= 1, got {batch}")
    ids = tok.encode(open(path, encoding="utf-8").read()) if n > 1 else tok.encode("\n")
    if len(ids) < n:
        fail(f"{prompt_file} holds fewer than {n} tokens")
    # batch rows: consecutive windows of the prompt file (from its start again if it runs out),
    # so that each row decodes its own text
    ids = ids * (n * batch // len(ids) + 1)
    rows = [ids[i * n:(i + 1) * n] for i in range(batch)]
    prompts = torch.tensor(rows, dtype=torch.long, device=device)  # (batch, T)
    idx = prompts[:1]  # (1, T)
    models = {True: model, False: model, "batch": model}
    if compile:  # a second copy whose steps run compiled (the plain one stays the reference)
        compiled = copy.deepcopy(model)
        t0 = time.perf_counter()
        try:
            compiled.compile_decoding(batch_sizes=(1, batch))  # both steps compile before the timing
        except RuntimeError as e:  # no C++ compiler, an unsupported device
            fail(f"--compile=True failed: {e}")
        print(f"compiled the decoding step in {time.perf_counter() - t0:.1f}s (batch 1 and {batch})")
        models.update({"compiled": compiled, "compiled batch": compiled})
    keys = [k for k in models if batch > 1 or "batch" not in str(k)]
    times, outputs = {k: [] for k in keys}, {}
    for _ in range(runs):  # alternate the settings so that a slow spell of the machine hits all of them
        for key in keys:
            t0 = time.perf_counter()
            outputs[key] = models[key].generate(prompts if "batch" in str(key) else idx, max_new_tokens,
                                                temperature=0.0, use_cache=key is not False)
            times[key].append(time.perf_counter() - t0)
    # tokens/s: new tokens per second, summed over the rows of a batch
    results = {k: max_new_tokens * (batch if "batch" in str(k) else 1) / statistics.median(v) for k, v in times.items()}
    same = torch.equal(outputs[True], outputs[False])
    if compile:
        same = same and torch.equal(outputs[True], outputs["compiled"]) and torch.equal(outputs["batch"],
                                                                                        outputs["compiled batch"])
    print(f"{out_dir}: {model.num_params():,} parameters, block_size {bs}, prompt of {n} tokens, "
          f"{max_new_tokens} new tokens, greedy, median of {runs} runs on {device}, {torch.get_num_threads()} threads")
    print(f"{'KV cache':<12}{'batch':>6}{'tokens/s':>10}")
    print(f"{'on':<12}{1:>6}{results[True]:>10,.0f}")
    print(f"{'off':<12}{1:>6}{results[False]:>10,.0f}")
    if batch > 1:
        print(f"{'on':<12}{batch:>6}{results['batch']:>10,.0f}  (all rows together: "
              f"{results['batch'] / results[True]:.1f}x batch 1)")
    if compile:
        print(f"{'compiled':<12}{1:>6}{results['compiled']:>10,.0f}  ({results['compiled'] / results[True]:.2f}x "
              f"the plain cached step)")
        if batch > 1:
            print(f"{'compiled':<12}{batch:>6}{results['compiled batch']:>10,.0f}  "
                  f"({results['compiled batch'] / results['compiled']:.1f}x compiled batch 1)")
    print(f"speed-up {results[True] / results[False]:.1f}x | greedy outputs identical: {same}")
    if not same:
        fail("greedy outputs differ between the settings")


def make_folder(path, megabytes):
    """A corpus folder of about `megabytes` MB in the shapes prepare.py reads: 8 MB .txt files (every
    second one Latin-1), .jsonl.gz and .parquet files of one record per paragraph, all built from the
    shipped text, its paragraphs shuffled differently in every file."""
    import gzip
    import random

    from corpus import read_text
    paragraphs = []
    for src in ("data/es/corpus", "data/es/reviews", "data/es/books"):
        for f in sorted(os.listdir(os.path.join(HERE, src))):
            text = read_text(os.path.join(HERE, src, f))[0].replace("\r\n", "\n")
            paragraphs += [p for p in text.split("\n\n") if p.strip()]
    rng, n, size = random.Random(0), 0, 0
    os.makedirs(path, exist_ok=True)
    while size < megabytes * 1e6:
        rng.shuffle(paragraphs)
        chunk, total = [], 0
        for p in paragraphs:
            chunk.append(p)
            total += len(p) + 2
            if total > 8e6:
                break
        name = os.path.join(path, f"part{n:04d}")
        if n % 4 == 3:  # a parquet file, if pyarrow is there (it comes with streamlit)
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.table({"text": chunk}), name + ".parquet")
            name += ".parquet"
        elif n % 4 == 2:
            with gzip.open(name + ".jsonl.gz", "wt", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in chunk)
            name += ".jsonl.gz"
        else:
            enc = "latin-1" if n % 4 == 1 else "utf-8"
            with open(name + ".txt", "w", encoding=enc, errors="replace") as f:
                f.write("\n\n".join(chunk))
            name += ".txt"
        size += os.path.getsize(name)
        n += 1
    return size


def bench_prepare():
    """prepare.py on a large generated folder: wall time, MB/s and the peak memory (RSS) of the process."""
    import resource
    have = sum(os.path.getsize(os.path.join(prepare_dir, f)) for f in os.listdir(prepare_dir)) \
        if os.path.isdir(prepare_dir) else 0
    if have < prepare_mb * 1e6:
        t0 = time.time()
        have = make_folder(prepare_dir, prepare_mb)
        print(f"generated {prepare_dir}/: {have / 1e6:,.0f} MB in {time.time() - t0:.0f} s")
    t0 = time.time()
    p = subprocess.run([sys.executable, os.path.join(HERE, "prepare.py"), f"--input={prepare_dir}",
                        "--dataset=bench_prepare", "--progress=False"], capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        fail(f"prepare.py failed: {p.stderr.strip()}")
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: kilobytes
    print(p.stdout.strip())
    print(f"prepare.py on {have / 1e6:,.0f} MB: {wall:.0f} s wall, {have / 1e6 / wall:.1f} MB/s over both passes, "
          f"peak RSS {rss_mb:,.0f} MB")


def cls_run(init, n, s):
    """One finetune_cls.py run; returns (model accuracy, TF-IDF accuracy) on the test split."""
    args = [sys.executable, os.path.join(HERE, "finetune_cls.py"), cls_config, f"--init_from={init}",
            f"--arch_from={backbone}", f"--train_labels={n}", f"--seed={s}", f"--device={device}",
            f"--out_dir=out-curve/{init.replace('/', '_')}-{n}-{s}", "--overwrite=True"]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"finetune_cls.py failed: {p.stderr.strip()}")
    acc = dict(re.findall(r"^(model|TF-IDF) .*?\s([\d.]+)\s+[\d.]+", p.stdout, re.M))
    return float(acc["model"]), float(acc["TF-IDF"])


def draw_curve(path, xs, series):
    """A small line chart as SVG (no plotting library): x = training labels, y = test accuracy."""
    W, H, L, B = 520, 300, 50, 40  # size, left and bottom margins
    lo, hi = 0.45, 0.9
    px = lambda i: L + 20 + i * (W - L - 60) / max(1, len(xs) - 1)
    py = lambda a: H - B - (a - lo) / (hi - lo) * (H - B - 20)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for a in (0.5, 0.6, 0.7, 0.8, 0.9):
        out.append(f'<line x1="{L}" x2="{W - 20}" y1="{py(a):.1f}" y2="{py(a):.1f}" stroke="#ddd"/>'
                   f'<text x="{L - 8}" y="{py(a) + 4:.1f}" text-anchor="end">{a:.1f}</text>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{px(i):.1f}" y="{H - B + 18}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{(W + L) / 2:.0f}" y="{H - 6}" text-anchor="middle">training labels</text>')
    out.append(f'<text x="14" y="{(H - B) / 2:.0f}" transform="rotate(-90 14 {(H - B) / 2:.0f})" '
               f'text-anchor="middle">test accuracy</text>')
    for k, (name, (color, means)) in enumerate(series.items()):
        pts = " ".join(f"{px(i):.1f},{py(m):.1f}" for i, m in enumerate(means))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{px(i):.1f}" cy="{py(m):.1f}" r="3.5" fill="{color}"/>' for i, m in enumerate(means)]
        out.append(f'<text x="{L + 10}" y="{20 + 16 * k}" fill="{color}">{name}</text>')
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def bench_curve():
    """Test accuracy of the GPT classifier (config cls_config) with few and all labels, from the
    pretrained backbone and from scratch (same network, random weights), beside TF-IDF on the same
    training texts: mean and spread over `seeds` seeds (each seed also draws its own label subset)."""
    try:
        load_checkpoint(backbone, kinds=("pretrain", "instr"))
    except CheckpointError as e:
        fail(e)
    ns = [int(n) for n in curve_labels.split(",")]
    rows = []
    for n in ns:
        runs = {"pretrained": [], "scratch": [], "tfidf": []}
        for s in range(1, seeds + 1):
            acc, tf = cls_run(backbone, n, s)
            runs["pretrained"].append(acc)
            runs["tfidf"].append(tf)
            runs["scratch"].append(cls_run("scratch", n, s)[0])
        rows.append((n, {k: (statistics.mean(v), statistics.pstdev(v)) for k, v in runs.items()}, runs))
        print(f"labels {n or 'all'}: " + ", ".join(f"{k} {' '.join(f'{a:.3f}' for a in v)}" for k, v in runs.items()),
              flush=True)
    print(f"\nsentiment test accuracy, backbone {backbone}, {cls_config}, mean ± sd of {seeds} seeds")
    print("| training labels | pretrained | scratch | TF-IDF + logreg | pretrained − scratch |")
    print("| --- | --- | --- | --- | --- |")
    for n, m, _ in rows:
        print(f"| {n or 'all'} | {m['pretrained'][0]:.3f} ± {m['pretrained'][1]:.3f} | {m['scratch'][0]:.3f} ± "
              f"{m['scratch'][1]:.3f} | {m['tfidf'][0]:.3f} | {m['pretrained'][0] - m['scratch'][0]:+.3f} |")
    if curve_svg:
        xs = [str(n or "all") for n, _, _ in rows]
        draw_curve(curve_svg, xs, {"GPT, pretrained": ("#1f77b4", [m["pretrained"][0] for _, m, _ in rows]),
                                   "GPT, from scratch": ("#d62728", [m["scratch"][0] for _, m, _ in rows]),
                                   "TF-IDF + logreg": ("#7f7f7f", [m["tfidf"][0] for _, m, _ in rows])})
        print(f"plot written to {curve_svg}")


def bench_resplit():
    """How much of a test accuracy is the luck of the split. cls_config's linear probe (frozen backbone,
    one per pooling in `pools`) and TF-IDF are fitted and scored on the data's own train/test split,
    then on `resplits` random stratified re-splits of all its labelled texts with the same sizes (val
    is left out: the probe never reads it). A test set of ~100 texts moves by several points from one
    split to the next; differences on the same splits (paired) are the steadier comparison."""
    if resplits < 0:
        fail(f"--resplits must be 0 (the own split only) or more, got {resplits}")
    import finetune_cls as fc  # its data reading, features and probe: the numbers are the demo's
    from tfidf import tfidf_baseline
    cfg = {**{k: getattr(fc, k) for k in ("data", "text_col", "label_col", "val_fraction", "test_fraction",
                                          "seed", "pool", "probe_l2")}, **read_config_file(in_kit(cls_config))}
    cfg["data"] = in_kit(cfg["data"])
    names_of_pools = pools.split(",") if pools else [cfg["pool"]]
    if any(p not in fc.POOLS for p in names_of_pools):
        fail(f"--pools: each must be one of {', '.join(fc.POOLS)}, got '{pools}'")
    try:
        ckpt = load_checkpoint(backbone, kinds=("pretrain", "instr"), quantized=False)
        gpt, tok = model_from_checkpoint(ckpt, device)
    except CheckpointError as e:
        fail(e)
    if scratch:  # the same architecture and vocabulary, random weights: what the features are worth untrained
        torch.manual_seed(seed)
        gpt = GPT(GPTConfig(**ckpt["model_args"])).to(device).eval()
    name = backbone + (" (random weights)" if scratch else "")
    own = fc.load_data(cfg["data"], cfg["text_col"], cfg["label_col"], cfg["val_fraction"], cfg["test_fraction"],
                       cfg["seed"])
    texts = [t for s in fc.SPLITS for t in own[s][0]]  # every labelled text once: train, val, test
    labels = [lab for s in fc.SPLITS for lab in own[s][1]]
    names = sorted(set(own["train"][1]))
    fc.check_labels(labels, names, f"the val/test splits of {cfg['data']}")
    y = torch.tensor([names.index(lab) for lab in labels])  # (N,)
    seqs = [tok.encode(t) for t in texts]  # a long text is read in windows (checkpoint.windows)
    X = {}  # pool -> (N, W): the frozen backbone's vectors, computed once per pooling
    for p in names_of_pools:
        X[p] = fc.all_features(fc.Classifier(gpt, len(names), p).to(device), seqs, tok.pad_id, 32).cpu()
    n = {s: len(own[s][0]) for s in fc.SPLITS}
    print(f"{name}: features of {len(texts)} texts ({', '.join(f'{p} {x.size(1):,}' for p, x in X.items())}) | "
          f"{cfg['data']}: {n['train']} train / {n['val']} val / {n['test']} test")
    # the own split first (rows in the order above), then the random ones, drawn as the kit splits one file
    draws = [(list(range(n["train"])), list(range(n["train"] + n["val"], len(texts))), cfg["seed"])]
    for r in range(1, resplits + 1):
        part = fc.stratified_split(list(range(len(texts))), labels, n["val"] / len(texts), n["test"] / len(texts), r)
        draws.append((part["train"][0], part["test"][0], r))
    cols = [f"probe, {p}" for p in X] + ["TF-IDF + logreg"]
    acc = {c: [] for c in cols}
    for k, (tr, te, s) in enumerate(draws):
        for p, x in X.items():
            head = torch.nn.Linear(x.size(1), len(names))
            fc.probe_head(head, x[tr], y[tr], len(names), cfg["probe_l2"], s)  # penalty cross-validated on train
            acc[f"probe, {p}"].append((head(x[te]).argmax(1) == y[te]).float().mean().item())
        tf = tfidf_baseline(([texts[i] for i in tr], y[tr].tolist()), ([texts[i] for i in te], None), len(names))
        acc["TF-IDF + logreg"].append((torch.as_tensor(tf) == y[te]).float().mean().item())
        print(f"{'own split' if k == 0 else f're-split {k}':<12}" + "  ".join(f"{c} {acc[c][-1]:.3f}" for c in cols),
              flush=True)

    def spread(v, signed=False):  # mean ± standard error over the re-splits (and min-max of an accuracy)
        se = statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0
        return f"{statistics.mean(v):+.3f} ± {se:.3f}" if signed else \
            f"{statistics.mean(v):.3f} ± {se:.3f} ({min(v):.2f}–{max(v):.2f})"
    print(f"\ntest accuracy on {cfg['data']}, {cls_config}, backbone {name}: the own split, and the mean ± "
          f"standard error (min–max) over {resplits} random re-splits of the same sizes")
    print(f"| | own split | {resplits} re-splits | − TF-IDF on the same splits |")
    print("| --- | --- | --- | --- |")
    tf = acc["TF-IDF + logreg"][1:]
    for c in cols:
        rest = acc[c][1:]
        diff = spread([a - b for a, b in zip(rest, tf)], signed=True) if rest and c != cols[-1] else ""
        print(f"| {c} | {acc[c][0]:.3f} | {spread(rest) if rest else '-'} | {diff} |")


def stream_once(url, body, key):
    """One streaming chat request, read as server-sent events: (seconds to the first content,
    seconds in all, completion tokens from the usage chunk, 429s met). A 429 (the server's queue is
    full) is retried after its Retry-After, as API clients do; the time waiting counts."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    t0, refused = time.perf_counter(), 0
    while True:
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=300)
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
        r = conn.getresponse()
        if r.status != 429:
            break
        refused += 1
        r.read()
        conn.close()
        time.sleep(float(r.getheader("Retry-After", "1")))
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read().decode()[:200]}")
    first, tokens = None, 0
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if first is None and any(c["delta"].get("content") for c in event["choices"]):
            first = time.perf_counter() - t0
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    conn.close()
    total = time.perf_counter() - t0
    return first if first is not None else total, total, tokens, refused


def bench_serve():
    """clients threads, each sending `requests` streaming requests one after the other."""
    from concurrent.futures import ThreadPoolExecutor
    body = {"model": serve_model, "messages": [{"role": "user", "content": serve_prompt}], "stream": True,
            "max_tokens": max_new_tokens, "temperature": 0, "stream_options": {"include_usage": True}, "n": choices}

    errors = []

    def client(_):
        out = []
        for _ in range(requests):
            try:
                out.append(stream_once(serve_url, body, api_key))
            except (OSError, RuntimeError, ValueError) as e:  # refused, HTTP error, broken stream
                errors.append(f"{type(e).__name__}: {e}")
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    if not results:
        fail(f"serve benchmark against {serve_url}: every request failed ({errors[0]}); is `python serve.py` running?")
    ttft, total = sorted(r[0] for r in results), sorted(r[1] for r in results)

    def pct(xs, p):
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]
    n_tok = sum(r[2] for r in results)
    print(f"{serve_url} model {serve_model}: {clients} clients x {requests} = {len(results)} requests, "
          f"streaming, greedy, max_tokens {max_new_tokens}, {choices} choice{'s' if choices > 1 else ''} each")
    print(f"time to first token  p50 {pct(ttft, 50) * 1000:7.0f} ms   p95 {pct(ttft, 95) * 1000:7.0f} ms")
    print(f"total per request    p50 {pct(total, 50) * 1000:7.0f} ms   p95 {pct(total, 95) * 1000:7.0f} ms")
    print(f"aggregate {n_tok / wall:,.0f} tokens/s ({n_tok:,} tokens in {wall:.1f} s); "
          f"{sum(r[3] for r in results)} responses 429 (server full), retried after Retry-After")
    print(f"errors {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    if errors:
        fail(f"{len(errors)} of {clients * requests} requests failed")


torch.set_grad_enabled(mode == "train")
if mode == "serve":
    bench_serve()
elif mode == "curve":
    bench_curve()
elif mode == "resplit":
    bench_resplit()
elif mode == "prepare":
    bench_prepare()
elif mode == "train":
    bench_train()
elif mode == "race" and nanogpt:
    bench_race_nanogpt()
elif mode == "race":
    bench_race()
elif mode == "sample":
    with torch.no_grad():
        bench_sample()
else:
    fail(f"mode must be train, race, sample, prepare, curve, resplit or serve, got '{mode}'")
