# Production image: gunicorn with threads (one long download never blocks other requests),
# static files through whitenoise. Needs only the Debian and PyPI registries.
# One worker process by default: without CACHE_URL (Redis) the backup lock is per process, so
# set CACHE_URL before raising GUNICORN_WORKERS.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# pg_dump/pg_restore must be at least the server's major version.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN SECRET_KEY=collectstatic-only DATABASE_URL=postgres://localhost/none \
    python manage.py collectstatic --noinput

RUN useradd --system --home-dir /app hub
USER hub
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn hub.wsgi:application --bind 0.0.0.0:8000 --worker-class gthread --workers ${GUNICORN_WORKERS:-1} --threads ${GUNICORN_THREADS:-8} --timeout 120 --graceful-timeout 30 --access-logfile -"]
