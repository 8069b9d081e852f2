#!/usr/bin/env bash
# The demo platform: a Celery worker in the background, the web server in the
# foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HOST=${GLASSBOX_HOST:-127.0.0.1}
PORT=${GLASSBOX_PORT:-8000}

# -B: the worker also runs Celery beat (the explanation reaper, every 15 s).
.venv/bin/celery -A governance worker -B -s var/celerybeat-schedule --loglevel=INFO --concurrency=1 --without-gossip --without-mingle \
    > var/worker.log 2>&1 &
WORKER_PID=$!
trap 'kill $WORKER_PID 2>/dev/null || true' EXIT INT TERM

echo
echo "Glassbox is starting at http://$HOST:$PORT/  (worker log: var/worker.log, API docs: http://$HOST:$PORT/api/docs/)"
echo
"$PY" manage.py runserver "$HOST:$PORT" --noreload
