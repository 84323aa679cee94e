# One image for every recs command; docker-compose.yml runs consume, update and train from it.
#   docker build -t recs:local .
#   docker run --rm recs:local recs --help
FROM python:3.11-slim

# OPENBLAS_NUM_THREADS=1: implicit's ALS runs its own threads; OpenBLAS threads on top of them
# oversubscribe the cores and slow training down (implicit warns about it).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1

WORKDIR /src

# The dependencies first, in a layer of their own, so editing the code does not reinstall
# numpy, scipy and friends. All of them ship binary wheels (x86_64 and arm64): no compiler.
# constraints.txt pins their exact versions (the same pins make and CI install).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt

COPY README.md ./
COPY recs ./recs
COPY consumers ./consumers
COPY store ./store
COPY trainer ./trainer
RUN pip install --no-deps .

# Never run as root. /models is where `recs train` writes model files (a volume in compose).
RUN groupadd --gid 10001 recs \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin recs \
 && mkdir -p /models \
 && chown recs:recs /models
USER 10001:10001
WORKDIR /home/recs

# Prometheus metrics: recs consume (9100) and recs update (9101); recs serve's HTTP API (8000).
EXPOSE 9100 9101 8000
CMD ["recs", "--help"]
