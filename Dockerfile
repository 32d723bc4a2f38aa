# arbg app image. CPU by default (pinned CPU torch); CUDA with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t arbg:cuda .
# (run the CUDA image with --gpus all). Not built in CI: the development machines have no
# Docker engine. It follows the Makefile's set-up step by step.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY arbg_core ./arbg_core
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && pip install --no-cache-dir .

# 3Dmol.js from npm into the app's static folder (served by Streamlit, no CDN at run time).
RUN mkdir -p static && cd static && npm install --no-audit --no-fund --silent --prefix ./.npm 3dmol@2.5.5 \
 && cp .npm/node_modules/3dmol/build/3Dmol-min.js 3Dmol-min.js && rm -rf .npm

# The app, its pages and the shipped models and reference ensembles are baked in.
COPY app.py ./
COPY pages ./pages
COPY app_lib ./app_lib
COPY assets ./assets
COPY .streamlit ./.streamlit

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD curl -fsS http://localhost:8501/_stcore/health || exit 1
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
