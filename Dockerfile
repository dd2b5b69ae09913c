# CUDA-capable image: build with `docker build -t facerec .`,
# train with `docker run --gpus all -v $PWD/data:/app/data facerec head=arcface trainer=gpu`.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
RUN python3.11 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r requirements-nodeps.txt
ENV PATH=/opt/venv/bin:$PATH

COPY conf conf
COPY facerec facerec
COPY train.py eval.py ./

ENTRYPOINT ["python", "train.py"]
