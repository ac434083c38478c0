# make demo: venv -> prepare (byte-level BPE, 2,048 tokens) -> pretrain (the lesson) -> bits per byte on a
# held-out book -> instruction finetune of the shipped BPE backbone (+ evaluation: single questions and
# conversations) -> classification (a linear probe on the shipped 6x256 character backbone) -> answers
# make test: the whole test suite (CPU, 3-4 minutes on 2 cores from a fresh clone)
PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: demo test app serve clean venv backbone backbone-bpe

# two stamps: what the scripts need (requirements.txt), and on top what the tests need (requirements-dev.txt),
# so that `make demo` does not install the test tools (pytest, playwright, the openai client, ...)
.venv/.installed: requirements.txt
	python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	touch $@

.venv/.installed-dev: .venv/.installed requirements-dev.txt
	$(PIP) install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: .venv/.installed-dev

demo: .venv/.installed
	$(PY) prepare.py --tokenizer=bpe --vocab_size=2048
	$(PY) train.py config/pretrain_char.py config/pretrain_bpe.py --overwrite=True
	$(PY) evaluate.py --out_dir=out,pretrained/es-bpe2048-4x128 --text=data/es/heldout/pg13507.txt --max_chars=40000
	$(PY) sample.py --start="El perro es" --max_new_tokens=300
	$(PY) finetune_instr.py config/finetune_instr.py --overwrite=True
	$(PY) finetune_cls.py config/finetune_cls.py --overwrite=True
	@for q in "¿Los perros son caninos?" "¿Los gatos son felinos?" "¿Cuál es la capital de Costa Rica?"; do \
		echo "> $$q"; $(PY) sample.py --out_dir=out-instr --prompt="$$q"; done
	printf '¿Los perros son caninos?\n¿Y los gatos?\n' | $(PY) sample.py --out_dir=out-instr --chat=True

# the shipped backbone pretrained/es-char-6x256/ (50 minutes on 2 CPU cores: the config's time guard stops it near step 3,300)
backbone: .venv/.installed
	$(PY) prepare.py
	$(PY) train.py config/pretrain_backbone.py --overwrite=True
	$(PY) checkpoint.py --src=out-backbone --dst=pretrained/es-char-6x256 --overwrite=True

# the shipped BPE backbone pretrained/es-bpe2048-4x128/ that the demo's instruction finetune starts
# from: the 4x128 model of config/pretrain_char.py trained 5,400 steps (about 27 minutes on 2 CPU cores)
backbone-bpe: .venv/.installed
	$(PY) prepare.py --tokenizer=bpe --vocab_size=2048
	$(PY) train.py config/pretrain_char.py config/pretrain_backbone_bpe.py --overwrite=True
	$(PY) checkpoint.py --src=out-backbone-bpe --dst=pretrained/es-bpe2048-4x128 --overwrite=True

# two pytest workers (pytest-xdist), one torch thread each (two 2-thread torch jobs on 2 cores slow each
# other down); the scripts the tests run start from a fork server that imported torch once (tests/zygote.py)
test: .venv/.installed-dev
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist worksteal tests

app: .venv/.installed
	.venv/bin/streamlit run app.py --server.address=127.0.0.1

# the OpenAI-compatible API on http://127.0.0.1:8000/v1 (serve.py)
serve: .venv/.installed
	$(PY) serve.py --out_dir=out-instr

clean:
	rm -rf out out-* data/es/*.bin data/es/meta.json data/shakespeare_char data/bench_prepare bench-prepare .pytest_cache test-artifacts
