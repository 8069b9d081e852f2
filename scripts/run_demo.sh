#!/usr/bin/env bash
# The demo platform: a Celery worker in the background, the web server in the
# foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HOST=${GLASSBOX_HOST:-127.0.0.1}
PORT=${GLASSBOX_PORT:-8000}

# Two workers: one for the light default queue that also runs Celery beat
# (-B: rollout analysis, monitoring, the explanation reaper), one for the
# heavy explanation queue, so a long report never delays a rollout decision.
.venv/bin/celery -A glassbox worker -Q glassbox -B -s var/celerybeat-schedule --loglevel=INFO --concurrency=1 \
    --without-gossip --without-mingle -n light@%h > var/worker.log 2>&1 &
LIGHT_WORKER_PID=$!
.venv/bin/celery -A glassbox worker -Q explanations --loglevel=INFO --concurrency=1 \
    --without-gossip --without-mingle -n explain@%h > var/worker-explanations.log 2>&1 &
EXPLAIN_WORKER_PID=$!
trap 'kill $LIGHT_WORKER_PID $EXPLAIN_WORKER_PID 2>/dev/null || true' EXIT INT TERM

echo
echo "Glassbox is starting at http://$HOST:$PORT/  (worker logs: var/worker.log, var/worker-explanations.log, API docs: http://$HOST:$PORT/api/docs/)"
echo "E-mail notifications are printed in var/worker.log (set EMAIL_HOST to send them over SMTP)."
echo "From a terminal: .venv/bin/glassbox login --url http://$HOST:$PORT  (then .venv/bin/glassbox --help)"
echo
"$PY" manage.py runserver "$HOST:$PORT" --noreload
