# The chat app (app.py) in a container: CPU-only PyTorch, a non-root user, port 8501.
#
#   docker build -t llmfs-app .
#   docker run --rm -p 127.0.0.1:8501:8501 -v "$PWD/out-instr:/app/out-instr:ro" llmfs-app   # a model you trained
#
#   docker build --build-arg TRAIN_DEMO=1 -t llmfs-app:demo .    # trains the demo model while building
#   docker run --rm -p 127.0.0.1:8501:8501 llmfs-app:demo
#
# then open http://localhost:8501. Inside the container the server listens on 0.0.0.0 (CMD below,
# overriding .streamlit/config.toml's 127.0.0.1) so that the published port reaches it; publishing on
# 127.0.0.1 keeps the app local to this machine, as `streamlit run app.py` is.
#
# The OpenAI-compatible API (serve.py) from the same image, on 0.0.0.0 inside, published locally:
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/out-instr:/app/out-instr:ro" llmfs-app python serve.py --out_dir=out-instr --host=0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --gid 1000 app \
    && useradd --create-home --uid 1000 --gid 1000 --shell /usr/sbin/nologin app \
    && install -d -o 1000 -g 1000 /app
WORKDIR /app

# torch from the CPU-only wheel index first (the default wheel brings CUDA: gigabytes), then the rest of
# requirements.txt, whose torch==2.13.0 pin that wheel already satisfies
COPY requirements.txt .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install --no-cache-dir -r requirements.txt

COPY --chown=1000:1000 . .
USER 1000:1000

# TRAIN_DEMO=1: prepare the data and train the demo models inside the image (minutes on CPU);
# otherwise mount a trained out-instr/ at run time (see the top of this file)
ARG TRAIN_DEMO=0
RUN if [ "$TRAIN_DEMO" = "1" ]; then \
        python prepare.py --tokenizer=bpe --vocab_size=2048 \
        && python train.py config/pretrain_char.py config/pretrain_bpe.py \
        && python finetune_instr.py config/finetune_instr.py; \
    fi

EXPOSE 8501 8000
# healthy when the app (8501) or the API server (8000, serve.py) answers its health endpoint
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request\ndef ok(url):\n    try:\n        return urllib.request.urlopen(url, timeout=4).status == 200\n    except Exception:\n        return False\nsys.exit(0 if ok('http://localhost:8501/_stcore/health') or ok('http://localhost:8000/health') else 1)"]
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true", "--browser.gatherUsageStats=false"]
