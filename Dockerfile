# DiffALL service image: the API, the Celery worker and beat, and the `diffall` command line.
#   docker build -t diffall .
#   docker run --rm -p 8000:8000 -v diffall-data:/var/lib/diffall diffall diffall serve --host 0.0.0.0
# docker-compose.yml runs it against PostgreSQL, Redis and MinIO.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DIFFALL_DATA_DIR=/var/lib/diffall

RUN groupadd --system --gid 10001 diffall \
    && useradd --system --uid 10001 --gid diffall --home-dir /home/diffall --create-home \
       --shell /usr/sbin/nologin diffall \
    && install -d -o diffall -g diffall -m 0750 /var/lib/diffall

WORKDIR /app

# Dependencies first, exactly as locked (requirements/runtime.txt is exported from uv.lock with
# hashes by ./scripts/lock); their layer is reused until the lock changes. No dev tools.
COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --require-hashes -r /tmp/runtime.txt && rm /tmp/runtime.txt
COPY pyproject.toml README.md ./

# The project itself. Installed in place (editable): the Alembic migrations are found next to the
# `core` package (core/db/session.py), so the source tree stays at /app.
COPY alembic.ini ./
COPY migrations ./migrations
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY diffall ./diffall
COPY viewer ./viewer
# The client distribution (diffall/, the `diffall` command) and the server (.), both in place.
RUN pip install --no-deps -e ./diffall -e . \
    && python -c "import core, api, worker, diffall"

USER diffall
EXPOSE 8000

# The API; docker-compose.yml overrides the command for migrate, worker and scheduler.
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", \
     "--proxy-headers", "--forwarded-allow-ips", "*"]
