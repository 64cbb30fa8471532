# One image for the API and the worker; the API never imports torch, so a slimmer API image
# can be built with --build-arg EXTRAS= (no worker extra). Models are mounted at /models, or
# baked in with --build-arg PULL_MODELS=1 (the configured TEXTQ_*_MODEL, pinned by
# `textq models pull`) for hosts that start without a network.
FROM python:3.11-slim AS build
ARG EXTRAS=worker
# CPU wheels by default; for CUDA images pass e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY worker worker
COPY shared shared
COPY textq textq
RUN python -m venv /opt/textq \
    && if [ -n "$EXTRAS" ]; then /opt/textq/bin/pip install --index-url "$TORCH_INDEX" "torch>=2.4"; fi \
    && /opt/textq/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 textq
COPY --from=build /opt/textq /opt/textq
ENV PATH=/opt/textq/bin:$PATH \
    HF_HOME=/models \
    TEXTQ_DATA_DIR=/data
ARG PULL_MODELS=
ARG TEXTQ_SENTIMENT_MODEL=distilbert/distilbert-base-uncased-finetuned-sst-2-english
ARG TEXTQ_SUMMARIZATION_MODEL=facebook/bart-large-cnn
ARG TEXTQ_EMBEDDING_MODEL=sentence-transformers/all-MiniLM-L6-v2
RUN mkdir -p /models /data && chown textq:textq /models /data
USER 10001
RUN if [ -n "$PULL_MODELS" ]; then \
        TEXTQ_SENTIMENT_MODEL="$TEXTQ_SENTIMENT_MODEL" \
        TEXTQ_SUMMARIZATION_MODEL="$TEXTQ_SUMMARIZATION_MODEL" \
        TEXTQ_EMBEDDING_MODEL="$TEXTQ_EMBEDDING_MODEL" textq models pull; \
    fi
EXPOSE 8000 9101 9102
ENTRYPOINT ["textq"]
CMD ["api", "--host", "0.0.0.0"]
